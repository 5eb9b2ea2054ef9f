/* The control events stream `dvv:{ctl}:events` (docs/redis.md): dvv-api and the relays append
 * events (plan, revoke, tunnel, capped); every relay polls it with XREAD every 200 ms through its
 * own Redis client (no blocking read: works the same on standalone and Cluster) and acts on
 * each event within a second (enforce.h).
 *
 * Contract: events_start begins at the newest entry (history is not replayed: registrations read
 * the current state anyway). Batches are bounded (512 entries per read; a full batch reads again
 * at once). While Redis is down, polls fail quietly and the relay catches up from its last id
 * when it is back; if the stream's newest id is ever lower than the last id seen (Redis came
 * back empty), reading restarts from there. Malformed entries are skipped with a rate-limited
 * log line. All on the relay's loop. */
#ifndef DVV_EVENTS_H
#define DVV_EVENTS_H

struct relay;

#define EVENTS_POLL_MS 200
#define EVENTS_BATCH 512
#define EVENTS_MAXLEN 100000

int events_start(struct relay *r);
void events_stop(struct relay *r);
/* XADD an event (MAXLEN ~ EVENTS_MAXLEN): type and sub, then optional jti, tid, reason (NULL:
 * absent). Fire and forget: -ENOTCONN while Redis is down. */
int events_publish(struct relay *r, const char *type, const char *sub, const char *jti,
		   const char *tid, const char *reason);

/* Parsing of one entry's field/value pairs (exposed for the unit and fuzz tests): fills ev with
 * pointers into kv. 0, or -EINVAL (no valid type/sub, an id field outside [A-Za-z0-9_-]). */
struct events_entry {
	const char *type, *sub, *jti, *tid, *reason; /* NULL when absent */
};
int events_parse(const char *const *kv, const unsigned long *len, unsigned long n,
		 struct events_entry *ev);

#endif
