/* Plan enforcement at the relay: what a user's plan (plan.h, written to Redis by dvv-api) means
 * for its tunnels and their players here. The decisions live in this file; the byte counting
 * that feeds the bandwidth cap is the data planes' and the usage flush's.
 *
 * Contract (all on the relay's loop):
 * - enforce_tunnel_up: a registration was admitted with plan p and the user's usage; returns
 *   false when t was placed elsewhere or refused (priority-0 shedding) and is closed.
 * - enforce_admit_player: before a player is joined to t. Returns 0 to go on, or 1 when the
 *   player was answered (bandwidth used up: kick / MOTD; over max_players: kick, status pings
 *   still pass).
 * - enforce_user_total: the user's period total (usage flush or admission); at or over the
 *   plan's bandwidth_bytes (> 0) the user is capped here (players cut, logins refused, PLAN
 *   state "capped") and, if `publish`, a `capped` event tells the other relays.
 * - enforce_revoke / enforce_block / enforce_user_capped / enforce_plan_changed: the actions of
 *   the control events (events.c).
 * - enforce_tick: once a second: idle timeouts, the periodic PLAN frame, shedding.
 * Texts for players and agents are the contract's (docs/operators.md lists them). */
#ifndef DVV_ENFORCE_H
#define DVV_ENFORCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct tunnel;
struct player;
struct plan_limits;

bool enforce_tunnel_up(struct tunnel *t, const struct plan_limits *p, uint64_t used_bytes);
int enforce_admit_player(struct player *p, struct tunnel *t);
void enforce_user_total(struct relay *r, const char *sub, uint64_t total, bool publish);
void enforce_user_capped(struct relay *r, const char *sub);
void enforce_revoke(struct relay *r, const char *sub, const char *jti, const char *tid);
void enforce_block(struct relay *r, const char *sub, const char *tid, const char *reason);
void enforce_plan_changed(struct relay *r, const char *sub);
void enforce_send_plan(struct tunnel *t, const char *message);
void enforce_tick(struct relay *r);

/* Text helpers (exposed for unit tests): "10.0 GiB", and the kick / MOTD of a capped user. */
void enforce_fmt_bytes(uint64_t n, char *out, size_t len);
void enforce_capped_texts(const struct plan_limits *p, int64_t now, char *kick, size_t klen,
			  char *motd, size_t mlen);

#endif
