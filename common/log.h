/* Levelled logging to stderr, one line per event, with a per-call-site rate limit for anything
 * a remote peer can trigger (so a flood of bad clients cannot flood the log). */
#ifndef DVV_LOG_H
#define DVV_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_init(const char *prog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_level_parse(const char *s); /* "error".."debug" -> level, -1 if unknown */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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

/* Rate-limited variant: 10 lines burst per call site, then one per second. Not thread-safe
 * per call site beyond losing a count, which is acceptable for logging. */
#define pr_rl(level, ...)                                                                      \
	do {                                                                                   \
		static struct log_rl rl_;                                                      \
		uint32_t sup_;                                                                 \
		if (log_get_level() >= (level) && log_rl_allow(&rl_, 10, &sup_)) {             \
			if (sup_)                                                              \
				log_msg(level, "(%u similar lines suppressed)", sup_);         \
			log_msg(level, __VA_ARGS__);                                           \
		}                                                                              \
	} while (0)

uint64_t mono_ms(void);	 /* CLOCK_MONOTONIC in milliseconds */
int64_t wall_s(void);	 /* CLOCK_REALTIME in seconds */
uint64_t wall_ms(void);	 /* CLOCK_REALTIME in milliseconds */

#endif
