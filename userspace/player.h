/* A player connection the control plane still owns, from accept until it is joined to an agent
 * connection, handed to another relay, or answered by us. player.c owns it (handshake, answers,
 * joins); forward.c drives it while it is looked up and forwarded (PS_LOOKUP, PS_FORWARD).
 *
 * Contract: a player is on r->players while its socket is ours (io.fd >= 0). player_close()
 * and player_release() take it off the loop; its memory lives on while a Redis lookup still
 * points at it (refs), so a lookup's callback checks io.fd before touching it. */
#ifndef DVV_PLAYER_H
#define DVV_PLAYER_H

#include "relay.h"

enum player_state {
	PS_HANDSHAKE,	 /* peeking for a complete handshake */
	PS_WAIT_AGENT,	 /* routed; waiting for an agent data connection */
	PS_LOOKUP,	 /* asking Redis which relay holds the name (forward.c) */
	PS_FORWARD,	 /* connecting to the owning relay's internal port (forward.c) */
	PS_ANSWER_STATUS, /* no tunnel: we answer the status exchange ourselves */
	PS_LINGER	 /* final answer sent, draining input until the client closes */
};

/* What we tell a player when we answer it ourselves. */
enum answer_kind {
	ANS_OFFLINE,	  /* no live tunnel for the name, and Redis knows no tunnel for it */
	ANS_LIMITED,	  /* over the per-network join rate */
	ANS_RECONNECTING, /* the name's tunnel exists but is offline, migrating or reconnecting:
			   * status pings get the cached status marked offline (p->status) */
	ANS_BUSY,	  /* too many players already waiting for the tunnel's agent */
	ANS_UNAVAILABLE,  /* we cannot tell where the tunnel is (Redis unreachable) */
	ANS_IDLE,	  /* the tunnel was closed after being idle (plan idle timeout) */
	ANS_FULL,	  /* the tunnel has its plan's max_players: why = the kick text */
	ANS_CAPPED	  /* the user's bandwidth is used up: why = kick text, p->motd = MOTD */
};

struct player {
	struct loop_io io;
	struct loop_timer timer;
	struct relay *r;
	enum player_state state;
	int refs;		    /* 1 while open + 1 per Redis lookup in flight: freed at 0 */
	struct dlist wait_node;	    /* in tunnel->waiting while PS_WAIT_AGENT */
	struct dlist all;	    /* r->players: everything the control plane owns */
	struct sockaddr_storage peer, local;
	long rl_slot;		    /* ratelimit pending slot while PS_HANDSHAKE */
	bool forwarded;		    /* arrived from another relay: never forwarded again */
	uint64_t trace;		    /* trace id: drawn by the relay that accepted the player,
				     * carried to the owning relay and the agent; on its log lines */
	bool legacy_wait;	    /* a bare legacy ping prefix: waiting for the 1.6 part */
	struct mc_handshake hs;	    /* valid once routed */
	enum answer_kind answer;    /* what our own answer says (status MOTD, kick) */
	char motd[160];		    /* ANS_FULL / ANS_CAPPED: the status MOTD (enforce.c) */
	/* from the Redis lookup (forward.c): the name's sanitized cached status (malloc, freed
	 * with p) for the reconnecting answer, and whether Redis knows a tunnel for the name */
	char *status;
	size_t status_len;
	bool known;
	/* PS_ANSWER_STATUS: the status request / ping packets, which are tiny */
	uint16_t rxlen;
	uint8_t rx[32];
	bool status_sent;
	/* forward.c, PS_FORWARD: the connection to the owning relay (io.fd -1 when none) */
	struct {
		struct loop_io io;
		uint64_t epoch;	    /* of the route being acted on: sent in the header */
		char target[65];    /* instance id of the relay it goes to: sent in the header */
		bool sent;	    /* header sent, waiting for the owner's answer byte */
		bool relooked;	    /* the route was found stale once: Redis asked again */
		bool cached;	    /* the route came from the route cache, not from Redis */
		uint64_t deadline_ms; /* loop time by which p is answered or forwarded */
	} fwd;
};

/* ---- player.c, for forward.c ---- */

/* Move p to state s: it stops counting as an unfinished handshake and leaves its tunnel's
 * waiting list. */
void player_enter(struct player *p, enum player_state s);
/* Answer p ourselves (status MOTD, login kick or legacy kick, by what it asked) and linger;
 * why is the short reason the kicks show in parentheses. */
void player_answer(struct player *p, enum answer_kind kind, const char *why);
void player_close(struct player *p);
/* Take p off the control loop without closing its socket, which is returned for the caller to
 * hand to the data plane. */
int player_release(struct player *p);
/* p waited for a tunnel whose session moved elsewhere: route it again from scratch (local
 * tunnels, then Redis and forwarding). A forwarded player is answered reconnecting instead. */
void player_reroute(struct player *p);
/* Drop one reference (a Redis lookup's): frees p once it is closed and nothing points at it. */
void player_put(struct player *p);

/* Take over a connection forwarded by another relay (header verified): it becomes a player
 * whose real address is src, handled like any other but never forwarded again. */
void player_adopt_forwarded(struct relay *r, int fd, const struct sockaddr_storage *src,
			    const struct sockaddr_storage *dst, uint64_t trace);

#endif
