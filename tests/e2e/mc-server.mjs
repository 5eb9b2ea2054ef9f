#!/usr/bin/env node
// A small offline-mode Minecraft server for tests and the local demo.
//
//   node tests/e2e/mc-server.mjs [--port 25565] [--host 127.0.0.1] [--version 1.21.1]
//                                [--motd TEXT] [--max-players N]
//
// It puts every client that logs in into play state (login + position packets), and echoes each
// chat message back to its sender as a system message prefixed with "echo: ". Stdout carries one
// JSON object per line: {"event":"listening","port":N}, then {"event":"login",...} per player
// (and "chat"/"logout" lines). Diagnostics go to stderr. An error on one connection never takes
// the server down; SIGINT/SIGTERM close it cleanly (exit code 0).
//
// Importable: startServer(opts) -> Promise<{server, port, close()}>.

import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import process from 'node:process'

const require = createRequire(import.meta.url)
const mc = require('minecraft-protocol')
const nbt = require('prismarine-nbt')

export const DEFAULT_VERSION = '1.21.1'

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function warn (...args) {
  process.stderr.write(`[mc-server] ${args.join(' ')}\n`)
}

// Defaults for every field any supported version's login packet has; minecraft-data's own
// loginPacket (1.16+: dimension codec, world names, spawn info) is laid over these.
function loginPacketFor (mcData, client, maxPlayers) {
  const base = {
    entityId: client.id + 1,
    isHardcore: false,
    gameMode: 0,
    previousGameMode: 1,
    dimension: 0,
    difficulty: 1,
    maxPlayers,
    levelType: 'default',
    reducedDebugInfo: false,
    viewDistance: 10,
    simulationDistance: 10,
    enableRespawnScreen: true,
    doLimitedCrafting: false,
    hashedSeed: [0, 0],
    worldName: 'minecraft:overworld',
    worldType: 'minecraft:overworld',
    worldNames: ['minecraft:overworld'],
    isDebug: false,
    isFlat: true,
    portalCooldown: 0,
    enforcesSecureChat: false
  }
  const fromData = mcData.loginPacket || {}
  const packet = { ...base, ...fromData }
  packet.entityId = client.id + 1
  packet.maxPlayers = maxPlayers
  packet.enforcesSecureChat = false
  return packet
}

function positionPacket () {
  return {
    x: 0,
    y: 64,
    z: 0,
    dx: 0,
    dy: 0,
    dz: 0,
    yaw: 0,
    pitch: 0,
    flags: 0,
    teleportId: 1,
    onGround: false,
    dismountVehicle: false
  }
}

// minecraft-protocol's frame splitter throws (uncaught, from a socket 'data' handler) on a frame
// length VarInt that decodes negative, e.g. FF FF FF FF 0F. Turn that into a stream error so only
// that connection dies.
export function guardSplitter (client) {
  const sp = client.splitter
  if (!sp || sp._dvvGuarded) return
  const orig = sp._transform
  sp._transform = function (chunk, enc, cb) {
    try {
      return orig.call(this, chunk, enc, cb)
    } catch (e) {
      this.buffer = Buffer.alloc(0)
      cb(e)
    }
  }
  sp._dvvGuarded = true
}

export function systemChat (client, mcData, text) {
  if (mcData.protocol.play.toClient.types.packet_system_chat) {
    const content = mcData.supportFeature('chatPacketsUseNbtComponents')
      ? nbt.comp({ text: nbt.string(text) })
      : JSON.stringify({ text })
    // 1.19-1.19.x: {content, type}; 1.19.1+: {content, isActionBar}
    client.write('system_chat', { content, isActionBar: false, type: 1 })
  } else {
    // pre-1.19: chat packet, position 1 = system message
    client.write('chat', {
      message: JSON.stringify({ text }),
      position: 1,
      sender: '00000000-0000-0000-0000-000000000000'
    })
  }
}

export function startServer ({
  port = 25565,
  host = '127.0.0.1',
  version = DEFAULT_VERSION,
  motd = 'DVV test server',
  maxPlayers = 100,
  log = emit
} = {}) {
  const mcData = require('minecraft-data')(version)
  if (!mcData) throw new Error(`unsupported Minecraft version: ${version}`)

  const server = mc.createServer({
    'online-mode': false,
    validateChannelProtocol: false,
    host,
    port,
    version,
    motd,
    'max-players': maxPlayers,
    hideErrors: true,
    // minecraft-protocol's default handler prints with console.debug (stdout); keep stdout JSON-only.
    errorHandler: (client, err) => {
      warn(`client ${client.id} (${client.username || '?'}) error: ${err && err.message}`)
      try { client.end('error') } catch {}
      setTimeout(() => { try { client.socket.destroy() } catch {} }, 1000).unref()
    }
  })

  server.on('playerJoin', (client) => {
    const address = `${client.socket.remoteAddress}:${client.socket.remotePort}`
    try {
      const cData = require('minecraft-data')(client.version)
      client.write('login', loginPacketFor(cData, client, maxPlayers))
      client.write('position', positionPacket())
      log({ event: 'login', username: client.username, address, version: cData.version.minecraftVersion, hostname: client.serverHost })

      const onChat = (packet) => {
        try {
          const msg = String(packet.message ?? '')
          log({ event: 'chat', username: client.username, message: msg })
          systemChat(client, cData, 'echo: ' + msg)
        } catch (e) {
          warn(`chat echo to ${client.username} failed: ${e.message}`)
        }
      }
      client.on('chat', onChat) // pre-1.19
      client.on('chat_message', onChat) // 1.19+
      client.once('end', (reason) => log({ event: 'logout', username: client.username, address, reason: String(reason ?? '') }))
    } catch (e) {
      warn(`setting up ${client.username} failed: ${e.stack || e}`)
      try { client.end('Server error') } catch {}
    }
  })

  server.on('connection', (client) => {
    guardSplitter(client)
    // A client of another version: answer like a vanilla server (a readable login disconnect)
    // instead of minecraft-protocol's silent half-close, which leaves the client hanging.
    client.once('set_protocol', (packet) => {
      if (packet.nextState === 2 && packet.protocolVersion !== mcData.version.version) {
        const reason = `Outdated ${packet.protocolVersion < mcData.version.version ? 'client' : 'server'}! This server runs ${mcData.version.minecraftVersion}`
        try { client.write('disconnect', { reason: JSON.stringify({ text: reason }) }) } catch {}
        setTimeout(() => { try { client.socket.end() } catch {} }, 20)
        setTimeout(() => { try { client.socket.destroy() } catch {} }, 1000).unref()
      }
    })
  })

  return new Promise((resolve, reject) => {
    let listening = false
    server.on('error', (err) => {
      if (!listening) return reject(err)
      warn(`server error: ${err.message}`)
    })
    server.on('listening', () => {
      listening = true
      const actual = server.socketServer.address().port
      log({ event: 'listening', port: actual, host, version: mcData.version.minecraftVersion })
      resolve({
        server,
        port: actual,
        close: () => new Promise((resolve) => {
          try { server.close() } catch {}
          server.socketServer.once('close', resolve)
          // Sockets that never finish their close handshake must not keep us alive.
          setTimeout(() => {
            for (const c of Object.values(server.clients)) { try { c.socket.destroy() } catch {} }
          }, 500).unref()
          setTimeout(resolve, 2000).unref()
        })
      })
    })
  })
}

function parseArgs (argv) {
  const opts = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`)
      return argv[++i]
    }
    switch (a) {
      case '--port': opts.port = Number(val()); break
      case '--host': opts.host = val(); break
      case '--version': opts.version = val(); break
      case '--motd': opts.motd = val(); break
      case '--max-players': opts.maxPlayers = Number(val()); break
      case '-h': case '--help':
        process.stdout.write('usage: mc-server.mjs [--port N] [--host ADDR] [--version V] [--motd TEXT] [--max-players N]\n')
        process.exit(0)
        break
      default: throw new Error(`unknown argument: ${a}`)
    }
  }
  if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 0 && opts.port < 65536)) {
    throw new Error('--port must be 0..65535')
  }
  return opts
}

async function main () {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (e) {
    warn(e.message)
    process.exit(2)
  }
  process.on('uncaughtException', (e) => warn(`uncaught: ${e.stack || e}`))
  process.on('unhandledRejection', (e) => warn(`unhandled rejection: ${e && (e.stack || e)}`))
  let srv
  try {
    srv = await startServer(opts)
  } catch (e) {
    warn(`cannot start: ${e.message}`)
    process.exit(1)
  }
  let stopping = false
  const stop = async (sig) => {
    if (stopping) return
    stopping = true
    warn(`${sig}: shutting down`)
    await srv.close()
    process.exit(0)
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main()
