/* Levelled, rate-limited logging to stderr in text or JSON lines, and player trace ids (log.h).
 * The JSON encoder is ours rather than jansson's: a log line must be built without allocating
 * (it is called from every thread, on paths where malloc may have just failed) and cut to a
 * fixed size without ever producing invalid JSON, which jansson's dump does not offer. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

static const char *log_prog = "dvv";
static enum log_level log_level_cur = LOG_INFO;
static enum log_format log_fmt_cur = LOG_FMT_TEXT;
static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

void log_init(const char *prog, enum log_level level)
{
	log_prog = prog;
	log_level_cur = level;
}

void log_set_level(enum log_level level) { log_level_cur = level; }
enum log_level log_get_level(void) { return log_level_cur; }
void log_set_format(enum log_format f) { log_fmt_cur = f; }

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcasecmp(s, level_names[i]))
			return i;
	return -1;
}

int log_format_parse(const char *s)
{
	for (int i = 0; i < 2; i++)
		if (!strcasecmp(s, format_names[i]))
			return i;
	return -1;
}

uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int64_t wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec;
}

uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- trace ids ---- */

static _Atomic uint64_t trace_seed, trace_ctr;

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

uint64_t log_trace_new(void)
{
	uint64_t seed = atomic_load_explicit(&trace_seed, memory_order_relaxed);
	if (!seed) {
		uint64_t s = 0;
		/* getrandom does not fail for 8 bytes once the pool is up; the clock is a fallback
		 * that still gives distinct ids within this process */
		if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s))
			s = wall_ms() ^ ((uint64_t)getpid() << 32);
		s |= 1;
		uint64_t zero = 0;
		atomic_compare_exchange_strong(&trace_seed, &zero, s);
		seed = atomic_load(&trace_seed);
	}
	for (;;) {
		/* splitmix64 is a bijection: distinct counter values give distinct ids */
		uint64_t id = splitmix64(seed + atomic_fetch_add_explicit(&trace_ctr, 1,
									  memory_order_relaxed));
		if (id)
			return id;
	}
}

void log_trace_fmt(uint64_t trace, char out[LOG_TRACE_HEX])
{
	snprintf(out, LOG_TRACE_HEX, "%016llx", (unsigned long long)trace);
}

/* ---- formatting ---- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one (overlongs,
 * surrogates and code points over U+10FFFF are not). */
static size_t utf8_len(const unsigned char *s)
{
	unsigned c = s[0];
	if (c < 0x80)
		return 1;
	size_t n;
	unsigned min;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	unsigned cp = c & (0x7f >> n);
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

size_t log_json_escape(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	if (!cap)
		return 0;
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		char esc[8];
		const char *src = esc;
		size_t n, adv = 1;
		unsigned c = *p;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			n = 2;
		} else if (c == '\n' || c == '\r' || c == '\t') {
			esc[0] = '\\';
			esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
			n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
		} else if (c < 0x80) {
			src = (const char *)p;
			n = 1;
		} else if ((adv = utf8_len(p)) != 0) {
			src = (const char *)p;
			n = adv;
		} else {
			src = "\\ufffd";
			n = 6;
			adv = 1;
		}
		if (o + n > cap - 1)
			break; /* cut here: never half an escape or half a character */
		memcpy(out + o, src, n);
		o += n;
		p += adv;
	}
	out[o] = 0;
	return o;
}

size_t log_format_line(char *out, size_t cap, enum log_format f, const struct timespec *ts,
		       const char *prog, enum log_level level, uint64_t trace, const char *msg)
{
	struct tm tm;
	char when[96], tr[LOG_TRACE_HEX];
	size_t n = 0;
	if (cap < 64) {
		if (cap)
			out[0] = 0;
		return 0;
	}
	gmtime_r(&ts->tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 ts->tv_nsec / 1000000);
	if (trace)
		log_trace_fmt(trace, tr);
	if (f == LOG_FMT_JSON) {
		/* the fixed members, then msg cut to leave room for the tail and the newline */
		int m = snprintf(out, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"program\":\"", when,
				 level_names[level]);
		n = m < 0 ? 0 : (size_t)m;
		char tail[64];
		int t = trace ? snprintf(tail, sizeof(tail), "\",\"trace_id\":\"%s\"}\n", tr)
			      : snprintf(tail, sizeof(tail), "\"}\n");
		size_t tl = (size_t)t;
		if (n + tl + 16 >= cap) {
			out[0] = 0;
			return 0;
		}
		n += log_json_escape(out + n, cap - n - tl - 12, prog);
		memcpy(out + n, "\",\"msg\":\"", 9);
		n += 9;
		n += log_json_escape(out + n, cap - n - tl, msg);
		memcpy(out + n, tail, tl + 1);
		return n + tl;
	}
	int m = snprintf(out, cap, "%s %s %s: ", when, prog, level_names[level]);
	n = m < 0 ? 0 : (size_t)m;
	if (n > cap - 2)
		n = cap - 2;
	if (trace) {
		m = snprintf(out + n, cap - n - 1, "trace=%s ", tr);
		n += m < 0 ? 0 : (size_t)m;
		if (n > cap - 2)
			n = cap - 2;
	}
	size_t ml = strlen(msg);
	if (ml > cap - 2 - n)
		ml = cap - 2 - n;
	memcpy(out + n, msg, ml);
	n += ml;
	out[n++] = '\n';
	out[n] = 0;
	return n;
}

static void log_vmsg(enum log_level level, uint64_t trace, const char *fmt, va_list ap)
{
	char msg[1024], line[LOG_LINE_MAX];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t len = log_format_line(line, sizeof(line), log_fmt_cur, &ts, log_prog, level, trace,
				     msg);
	/* One write per line so lines from several threads never interleave. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level > log_level_cur)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, 0, fmt, ap);
	va_end(ap);
}

void log_msg_trace(enum log_level level, uint64_t trace, const char *fmt, ...)
{
	if (level > log_level_cur)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, trace, fmt, ap);
	va_end(ap);
}

bool log_rl_allow(struct log_rl *rl, uint32_t burst, uint32_t *suppressed)
{
	uint64_t now = mono_ms();
	if (rl->last_ms == 0) {
		rl->last_ms = now;
		rl->tokens = burst;
	}
	uint64_t refill = (now - rl->last_ms) / 1000;
	if (refill) {
		rl->tokens = (uint32_t)((rl->tokens + refill) > burst ? burst : rl->tokens + refill);
		rl->last_ms = now;
	}
	*suppressed = 0;
	if (rl->tokens == 0) {
		rl->suppressed++;
		return false;
	}
	rl->tokens--;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}
