/* Region selection: each region (eu, us, asia, ...) runs its own relay group behind one
 * endpoint. Without --relay or --region the agent measures the TCP connect time to every
 * endpoint and uses the fastest.
 *
 * A measurement: resolve every endpoint (getaddrinfo, blocking, once), then
 * AGENT_PROBE_SAMPLES rounds, one every AGENT_PROBE_SPACING_MS, each round starting one
 * non-blocking connect per region; all run in parallel on the caller's loop. A sample is the
 * time from connect() to the socket becoming writable; failures (refused, unreachable, no
 * answer within AGENT_PROBE_TIMEOUT_MS) count as missing samples. Each probe connection is
 * closed as soon as it is up, without sending anything: the relay sees an empty connection
 * and drops it. The median of the successful samples ranks the regions. */
#include "agent.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- parsing ---- */

static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n > AGENT_REGION_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

int agent_region_find(const struct agent_region *r, unsigned n, const char *name)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(r[i].name, name))
			return (int)i;
	return -1;
}

int agent_regions_parse(const char *spec, struct agent_region *out, unsigned *n, char *err,
			size_t errlen)
{
	*n = 0;
	if (!spec || !spec[strspn(spec, " \t")]) {
		snprintf(err, errlen, "is empty: want NAME=HOST:PORT[,NAME=HOST:PORT...]");
		return -EINVAL;
	}
	const char *p = spec;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		/* trim blanks around the entry */
		while (len && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		char entry[AGENT_REGION_NAME_MAX + 1 + 256 + 1];
		if (len == 0) {
			snprintf(err, errlen, "has an empty entry (a comma too many?)");
			return -EINVAL;
		}
		if (len >= sizeof(entry)) {
			snprintf(err, errlen, "entry '%.40s...' is too long", p);
			return -EINVAL;
		}
		memcpy(entry, p, len);
		entry[len] = 0;
		if (*n == AGENT_MAX_REGIONS) {
			snprintf(err, errlen, "has more than %d regions", AGENT_MAX_REGIONS);
			return -EINVAL;
		}
		char *eq = strchr(entry, '=');
		if (!eq) {
			snprintf(err, errlen, "entry '%s' has no '=': want NAME=HOST:PORT", entry);
			return -EINVAL;
		}
		size_t nlen = (size_t)(eq - entry);
		if (nlen == 0) {
			snprintf(err, errlen, "entry '%s' has an empty region name: want NAME=HOST:PORT",
				 entry);
			return -EINVAL;
		}
		if (!name_ok(entry, nlen)) {
			snprintf(err, errlen,
				 "entry '%s': a region name is 1-%d letters, digits, '-' or '_'",
				 entry, AGENT_REGION_NAME_MAX);
			return -EINVAL;
		}
		*eq = 0;
		const char *ep = eq + 1;
		char host[256];
		uint16_t port;
		if (!*ep || strlen(ep) >= sizeof(out->endpoint) ||
		    net_split_hostport(ep, host, sizeof(host), &port) || port == 0 || !host[0]) {
			snprintf(err, errlen,
				 "region '%s': bad address '%s': want HOST:PORT or [IPv6]:PORT with a "
				 "port from 1 to 65535",
				 entry, ep);
			return -EINVAL;
		}
		if (agent_region_find(out, *n, entry) >= 0) {
			snprintf(err, errlen, "names region '%s' twice", entry);
			return -EINVAL;
		}
		memset(&out[*n], 0, sizeof(out[*n]));
		memcpy(out[*n].name, entry, nlen); /* nlen <= AGENT_REGION_NAME_MAX */
		memcpy(out[*n].endpoint, ep, strlen(ep)); /* < sizeof(endpoint), checked */
		(*n)++;
		if (!end)
			break;
		p = end + 1;
	}
	return 0;
}

/* ---- statistics ---- */

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

void agent_region_stats(const int32_t *us, unsigned n, struct agent_region_result *r)
{
	int32_t ok[AGENT_PROBE_SAMPLES * 4];
	unsigned k = 0;
	for (unsigned i = 0; i < n && k < sizeof(ok) / sizeof(ok[0]); i++)
		if (us[i] >= 0)
			ok[k++] = us[i];
	r->ok = k;
	r->reachable = k >= AGENT_PROBE_MIN_OK;
	r->median_us = r->min_us = 0;
	if (!k)
		return;
	qsort(ok, k, sizeof(ok[0]), cmp_i32);
	r->min_us = (uint32_t)ok[0];
	if (r->reachable)
		r->median_us = k % 2 ? (uint32_t)ok[k / 2]
				     : (uint32_t)(((uint64_t)ok[k / 2 - 1] + (uint64_t)ok[k / 2]) / 2);
}

int agent_region_pick(const struct agent_region_result *r, unsigned n)
{
	int best = -1;
	for (unsigned i = 0; i < n; i++)
		if (r[i].reachable && (best < 0 || r[i].median_us < r[(unsigned)best].median_us))
			best = (int)i;
	return best;
}

/* ---- measurement ---- */

struct probe_sample {
	struct agent_probe *p;
	struct loop_io io;
	struct loop_timer timer;
	uint64_t t0_ns;
	unsigned region, round;
};

struct agent_probe {
	struct loop *loop;
	unsigned n;
	struct net_addr addr[AGENT_MAX_REGIONS];
	bool resolved[AGENT_MAX_REGIONS];
	int32_t us[AGENT_MAX_REGIONS][AGENT_PROBE_SAMPLES]; /* -1: failed or not done */
	struct probe_sample s[AGENT_MAX_REGIONS][AGENT_PROBE_SAMPLES];
	struct agent_region_result res[AGENT_MAX_REGIONS];
	struct loop_timer tick; /* the next round */
	unsigned rounds;	/* rounds started */
	unsigned pending;	/* samples in flight */
	bool finished;
	agent_probe_done_cb done;
	void *arg;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void probe_compute(struct agent_probe *p)
{
	for (unsigned i = 0; i < p->n; i++)
		agent_region_stats(p->us[i], AGENT_PROBE_SAMPLES, &p->res[i]); /* keeps .error */
}

/* All rounds started and nothing in flight: report, once. The callback may free p. */
static void probe_check_done(struct agent_probe *p)
{
	if (p->finished || p->rounds < AGENT_PROBE_SAMPLES || p->pending)
		return;
	p->finished = true;
	probe_compute(p);
	if (p->done)
		p->done(p, p->arg);
}

/* Record one sample: us >= 0 on success, else why it failed. Closes the probe connection. */
static void sample_end(struct probe_sample *s, int32_t us, const char *why)
{
	struct agent_probe *p = s->p;
	if (us >= 0)
		p->us[s->region][s->round] = us;
	else
		snprintf(p->res[s->region].error, sizeof(p->res[s->region].error), "%s", why);
	loop_timer_cancel(p->loop, &s->timer);
	loop_io_del(p->loop, &s->io);
	if (s->io.fd >= 0)
		close(s->io.fd); /* nothing sent: the relay drops an empty connection */
	s->io.fd = -1;
	p->pending--;
}

static void sample_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct probe_sample *s = container_of(io, struct probe_sample, io);
	struct agent_probe *p = s->p;
	uint64_t us = (mono_ns() - s->t0_ns + 500) / 1000; /* first: this is the sample */
	int e = net_so_error(io->fd);
	if (!e && !(events & EPOLLOUT) && (events & (EPOLLERR | EPOLLHUP)))
		e = ECONNRESET;
	if (!e && !(events & EPOLLOUT))
		return;
	if (e)
		sample_end(s, -1, strerror(e));
	else
		sample_end(s, us > INT32_MAX ? INT32_MAX : (int32_t)us, NULL);
	probe_check_done(p);
}

static void sample_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct probe_sample *s = container_of(t, struct probe_sample, timer);
	struct agent_probe *p = s->p;
	char why[64];
	snprintf(why, sizeof(why), "no answer within %.1f s", AGENT_PROBE_TIMEOUT_MS / 1000.0);
	sample_end(s, -1, why);
	probe_check_done(p);
}

static void sample_start(struct agent_probe *p, unsigned region, unsigned round)
{
	struct probe_sample *s = &p->s[region][round];
	*s = (struct probe_sample){.p = p, .region = region, .round = round};
	s->io = (struct loop_io){.fd = -1, .cb = sample_io_cb};
	s->timer.cb = sample_timer_cb;
	if (!p->resolved[region])
		return; /* counted as failed; the error says why */
	p->pending++;
	s->t0_ns = mono_ns();
	int fd, rc = net_connect(&p->addr[region], &fd);
	if (!rc) {
		s->io.fd = fd;
		rc = loop_io_set(p->loop, &s->io, EPOLLOUT);
	}
	if (rc) {
		sample_end(s, -1, strerror(-rc));
		return;
	}
	loop_timer_arm(p->loop, &s->timer, AGENT_PROBE_TIMEOUT_MS);
}

static void probe_round(struct agent_probe *p)
{
	unsigned round = p->rounds++;
	for (unsigned i = 0; i < p->n; i++)
		sample_start(p, i, round);
	if (p->rounds < AGENT_PROBE_SAMPLES)
		loop_timer_arm(p->loop, &p->tick, AGENT_PROBE_SPACING_MS);
}

static void probe_tick_cb(struct loop *l, struct loop_timer *t)
{
	struct agent_probe *p = container_of(t, struct agent_probe, tick);
	probe_round(p);
	probe_check_done(p);
}

int agent_probe_start(struct loop *l, const struct agent_region *regions, unsigned n,
		      agent_probe_done_cb done, void *arg, struct agent_probe **out)
{
	if (n > AGENT_MAX_REGIONS)
		n = AGENT_MAX_REGIONS;
	struct agent_probe *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->loop = l;
	p->n = n;
	p->done = done;
	p->arg = arg;
	p->tick.cb = probe_tick_cb;
	for (unsigned i = 0; i < n; i++) {
		for (unsigned j = 0; j < AGENT_PROBE_SAMPLES; j++) {
			p->us[i][j] = -1;
			p->s[i][j].io.fd = -1;
		}
		char err[256];
		if (net_parse_addr(regions[i].endpoint, &p->addr[i], true, err, sizeof(err)))
			snprintf(p->res[i].error, sizeof(p->res[i].error), "%s", err);
		else
			p->resolved[i] = true;
	}
	/* the first round now; the last one, at the earliest, from the tick timer: done is
	 * never called from here */
	probe_round(p);
	*out = p;
	return 0;
}

const struct agent_region_result *agent_probe_results(const struct agent_probe *p)
{
	return p->res;
}

void agent_probe_free(struct agent_probe *p)
{
	if (!p)
		return;
	loop_timer_cancel(p->loop, &p->tick);
	for (unsigned i = 0; i < p->n; i++)
		for (unsigned j = 0; j < AGENT_PROBE_SAMPLES; j++) {
			struct probe_sample *s = &p->s[i][j];
			loop_timer_cancel(p->loop, &s->timer);
			loop_io_del(p->loop, &s->io);
			if (s->io.fd >= 0)
				close(s->io.fd);
			s->io.fd = -1; /* a later event of this batch is skipped */
		}
	p->done = NULL;
	loop_defer(p->loop, free, p);
}

static void measure_done(struct agent_probe *p, void *arg) { *(bool *)arg = true; }
static bool measure_finished(void *arg) { return *(bool *)arg; }

int agent_regions_measure(const struct agent_region *regions, unsigned n,
			  struct agent_region_result *out)
{
	struct loop l;
	struct agent_probe *p = NULL;
	bool done = false;
	int rc = loop_init(&l);
	if (rc) {
		if (l.epfd >= 0)
			loop_free(&l);
		return rc;
	}
	rc = agent_probe_start(&l, regions, n, measure_done, &done, &p);
	if (!rc) {
		uint64_t limit = mono_ms() + AGENT_PROBE_SAMPLES * AGENT_PROBE_SPACING_MS +
				 AGENT_PROBE_TIMEOUT_MS + 1000;
		rc = loop_run_until(&l, measure_finished, &done, limit);
		if (rc == -ETIMEDOUT)
			rc = 0; /* cannot happen (every sample has a timeout); what is in counts */
		if (!done)
			probe_compute(p);
		memcpy(out, p->res, p->n * sizeof(*out));
		agent_probe_free(p);
	}
	loop_free(&l); /* runs the deferred free */
	return rc;
}
