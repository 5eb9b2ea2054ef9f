/* Levelled logging to stderr, one line per event, with a per-call-site rate limit for anything
 * a remote peer can trigger (so a flood of bad clients cannot flood the log).
 *
 * Two formats: text (the default: "TIME PROG LEVEL: [trace=ID ]MSG") and JSON (--log-format
 * json: one object per line with "time", "level", "program", "msg" and, for a line about one
 * player connection, "trace_id"). Callers never pass secrets (tokens, cluster secrets) to any
 * of these functions: the log is not a safe place for them, whatever the format.
 *
 * Trace ids: 64 bits, never 0 (0 means "no trace"), printed as 16 lower-case hex digits. The
 * relay that accepts a player draws one (log_trace_new) and every line about that player, on
 * every relay it passes and at the agent, carries it. */
#ifndef DVV_LOG_H
#define DVV_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };
enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON = 1 };

#define LOG_LINE_MAX 2048 /* one line, newline included; longer messages are cut */
#define LOG_TRACE_HEX 17  /* 16 hex digits + NUL */

void log_init(const char *prog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_level_parse(const char *s); /* "error".."debug" -> level, -1 if unknown */
void log_set_format(enum log_format f);
int log_format_parse(const char *s); /* "text" | "json" -> format, -1 if unknown */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line about one player connection: carries its trace id (0: none, then like log_msg). */
void log_msg_trace(enum log_level level, uint64_t trace, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A fresh trace id: a 64-bit mix (splitmix64) of a per-process random seed and a counter, so
 * ids never repeat within a process and do not collide across relays in practice; never 0.
 * Thread-safe. Not a secret: it is printed in logs and sent between relays and to the agent. */
uint64_t log_trace_new(void);
void log_trace_fmt(uint64_t trace, char out[LOG_TRACE_HEX]);

/* The pure parts, for tests. log_json_escape writes s as the inside of a JSON string (quotes,
 * backslashes, control characters and DEL escaped; bytes that are not valid UTF-8 become
 * U+FFFD), at most cap - 1 bytes plus a NUL, never cutting an escape or a character in two;
 * returns the bytes written. log_format_line builds one whole line (newline included, NUL
 * terminated) and returns its length, at most cap - 1. */
size_t log_json_escape(char *out, size_t cap, const char *s);
size_t log_format_line(char *out, size_t cap, enum log_format f, const struct timespec *ts,
		       const char *prog, enum log_level level, uint64_t trace, const char *msg);

/* A token bucket per call site: at most `burst` lines, refilled at one line per second; the
 * number of suppressed lines is reported on the next line that gets through. */
struct log_rl {
	uint64_t last_ms;
	uint32_t tokens;
	uint32_t suppressed;
};
bool log_rl_allow(struct log_rl *rl, uint32_t burst, uint32_t *suppressed);

#define pr_err(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define pr_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define pr_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define pr_debug(...)                                                                          \
	do {                                                                                   \
		if (log_get_level() >= LOG_DEBUG)                                              \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                       \
	} while (0)
/* A line about one player (trace id first). */
#define pr_trace(level, trace, ...)                                                            \
	do {                                                                                   \
		if (log_get_level() >= (level))                                                \
			log_msg_trace(level, trace, __VA_ARGS__);                              \
	} while (0)

/* Rate-limited variant: 10 lines burst per call site, then one per second. Not thread-safe
 * per call site beyond losing a count, which is acceptable for logging. */
#define pr_rl(level, ...) pr_rl_trace(level, 0, __VA_ARGS__)
#define pr_rl_trace(level, trace, ...)                                                         \
	do {                                                                                   \
		static struct log_rl rl_;                                                      \
		uint32_t sup_;                                                                 \
		if (log_get_level() >= (level) && log_rl_allow(&rl_, 10, &sup_)) {             \
			if (sup_)                                                              \
				log_msg(level, "(%u similar lines suppressed)", sup_);         \
			log_msg_trace(level, trace, __VA_ARGS__);                              \
		}                                                                              \
	} while (0)

uint64_t mono_ms(void);	 /* CLOCK_MONOTONIC in milliseconds */
uint64_t mono_us(void);	 /* CLOCK_MONOTONIC in microseconds */
int64_t wall_s(void);	 /* CLOCK_REALTIME in seconds */
uint64_t wall_ms(void);	 /* CLOCK_REALTIME in milliseconds */

#endif
