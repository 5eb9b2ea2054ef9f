// Three relays in separate network namespaces sharing a standalone Redis.
//   node --test --test-concurrency=1 tests/cluster/relays.test.mjs     (root)
import { relaysSuite } from './relays.suite.mjs'
relaysSuite({ redisMode: 'standalone', id: 11 })
