/* What the user sees on stdout. Three modes:
 *  - --json: one JSON object per line, flushed, built with jansson so strings are escaped;
 *  - human, stdout a terminal: a few permanent lines (tunnel up, forwarding, tunnel down) and one
 *    status line rewritten in place ("\r" + clear) with players online and joins;
 *  - human, stdout not a terminal: the permanent lines on stdout, everything else as plain log
 *    lines on stderr (a service manager's journal).
 * Logs always go to stderr. */
#include "agent.h"
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static struct {
	bool json;
	bool tty;
	bool status_shown; /* the cursor sits at the end of the in-place status line */
	const char *local;
	char status[512]; /* hostname (255) + counters + plan_tail (127) */
	char plan_tail[128]; /* appended to the status line: usage, or the capped state */
} rep;

void agent_report_init(bool json, const char *local)
{
	rep.json = json;
	rep.tty = !json && isatty(STDOUT_FILENO);
	rep.local = local;
	rep.status_shown = false;
	rep.status[0] = 0;
	rep.plan_tail[0] = 0;
}

void agent_fmt_bytes(uint64_t b, char *out, size_t cap)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	if (b < 1024) {
		snprintf(out, cap, "%llu B", (unsigned long long)b);
		return;
	}
	unsigned u = 0;
	double v = (double)b;
	while (v >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
		v /= 1024;
		u++;
	}
	/* one decimal, rounded down so "10.0" never shows for 9.96, and dropped when it is 0 */
	unsigned long long tenths = (unsigned long long)(v * 10);
	if (tenths % 10)
		snprintf(out, cap, "%llu.%llu %s", tenths / 10, tenths % 10, unit[u]);
	else
		snprintf(out, cap, "%llu %s", tenths / 10, unit[u]);
}

/* Printable text from the relay: control bytes (escape sequences) become '?'. */
static void printable(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (; *in && o + 1 < cap; in++)
		out[o++] = ((unsigned char)*in < 0x20 || *in == 0x7f) ? '?' : *in;
	out[o] = 0;
}

static void fmt_date(int64_t t, char *out, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || !strftime(out, cap, "%Y-%m-%d", &tm))
		snprintf(out, cap, "?");
}

void agent_plan_describe(const struct ctl_msg *m, char *out, size_t cap)
{
	const typeof(m->u.plan) *p = &m->u.plan;
	char tier[32], used[32], limit[32], idle[48] = "", resets[48] = "";
	printable(p->tier[0] ? p->tier : "?", tier, sizeof(tier));
	agent_fmt_bytes(p->used_bytes, used, sizeof(used));
	agent_fmt_bytes(p->bandwidth_bytes, limit, sizeof(limit));
	if (p->idle_timeout_s) {
		uint32_t t = p->idle_timeout_s;
		if (t % 3600 == 0)
			snprintf(idle, sizeof(idle), ", idle close after %u h", t / 3600);
		else if (t % 60 == 0)
			snprintf(idle, sizeof(idle), ", idle close after %u min", t / 60);
		else
			snprintf(idle, sizeof(idle), ", idle close after %u s", t);
	}
	if (p->period_end > 0) {
		char d[24];
		fmt_date(p->period_end, d, sizeof(d));
		snprintf(resets, sizeof(resets), ", resets %s", d);
	}
	char tunnels[32], players[32];
	if (p->max_tunnels)
		snprintf(tunnels, sizeof(tunnels), "%u tunnel%s", p->max_tunnels,
			 p->max_tunnels == 1 ? "" : "s");
	else
		snprintf(tunnels, sizeof(tunnels), "unlimited tunnels");
	if (p->max_players)
		snprintf(players, sizeof(players), "%u player%s", p->max_players,
			 p->max_players == 1 ? "" : "s");
	else
		snprintf(players, sizeof(players), "no player limit");
	char bw[96];
	if (p->bandwidth_bytes)
		snprintf(bw, sizeof(bw), "%s of %s used", used, limit);
	else
		snprintf(bw, sizeof(bw), "%s used, no bandwidth limit", used);
	snprintf(out, cap, "plan %s: %s, %s%s, %s%s%s", tier, tunnels, players, idle, bw, resets,
		 !strcmp(p->state, "capped")
			 ? "; BANDWIDTH LIMIT REACHED: players cannot join until it resets"
			 : "");
}

static void json_emit(json_t *o)
{
	if (!o)
		return;
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		fflush(stdout);
		free(s);
	}
	json_decref(o);
}

static const char *nz(const char *s) { return s ? s : ""; }

/* Milliseconds with two decimals, from microseconds (12345 us -> 12.35). */
static double us_ms(uint32_t us) { return (double)((us + 5) / 10) / 100.0; }

static json_t *regions_json(const struct agent_event *ev)
{
	json_t *arr = json_array();
	for (unsigned i = 0; arr && i < ev->nregions; i++) {
		const struct agent_region_result *r = &ev->results[i];
		json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:i}", "region", ev->regions[i].name,
				      "endpoint", ev->regions[i].endpoint, "median_ms",
				      r->reachable ? json_real(us_ms(r->median_us)) : json_null(),
				      "min_ms", r->ok ? json_real(us_ms(r->min_us)) : json_null(),
				      "ok", (int)r->ok);
		if (o && !r->reachable && r->error[0])
			json_object_set_new(o, "error", json_string(r->error));
		if (o)
			json_array_append_new(arr, o);
	}
	json_t *o = json_pack("{s:s, s:o, s:o}", "event", "regions", "results", arr ? arr : json_array(),
			      "picked",
			      ev->picked >= 0 ? json_string(ev->regions[ev->picked].name) : json_null());
	if (o && ev->previous >= 0)
		json_object_set_new(o, "previous", json_string(ev->regions[ev->previous].name));
	return o;
}

static void report_json(const struct agent_event *ev)
{
	json_t *o = NULL;
	switch (ev->type) {
	case AGENT_EV_CONNECTING:
		o = json_pack("{s:s, s:s}", "event", "connecting", "relay", nz(ev->relay));
		break;
	case AGENT_EV_TUNNEL_UP:
		o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "event", "tunnel_up", "hostname",
			      nz(ev->hostname), "relay", nz(ev->relay), "tunnel", nz(ev->tunnel),
			      "region", nz(ev->region), "local", nz(rep.local));
		if (o && ev->from)
			json_object_set_new(o, "moved_from", json_string(ev->from));
		break;
	case AGENT_EV_TUNNEL_DOWN:
		o = json_pack("{s:s, s:s}", "event", "tunnel_down", "reason", nz(ev->reason));
		break;
	case AGENT_EV_RECONNECTING:
		o = json_pack("{s:s, s:I, s:i}", "event", "reconnecting", "in_ms",
			      (json_int_t)ev->in_ms, "attempt", (int)ev->attempt);
		if (o && ev->reason)
			json_object_set_new(o, "reason", json_string(ev->reason));
		if (o && ev->migrating)
			json_object_set_new(o, "migrating", json_true());
		break;
	case AGENT_EV_MIGRATING:
		o = json_pack("{s:s, s:s, s:s, s:s}", "event", "migrating", "from", nz(ev->relay),
			      "to", nz(ev->to), "reason", nz(ev->reason));
		break;
	case AGENT_EV_PLAYER_OPEN:
		o = json_pack("{s:s, s:s, s:i}", "event", "player_open", "player", nz(ev->player),
			      "active", (int)ev->active);
		break;
	case AGENT_EV_PLAYER_CLOSE:
		o = json_pack("{s:s, s:s, s:i, s:I, s:I, s:I}", "event", "player_close", "player",
			      nz(ev->player), "active", (int)ev->active, "bytes_in",
			      (json_int_t)ev->bytes_in, "bytes_out", (json_int_t)ev->bytes_out,
			      "duration_ms", (json_int_t)ev->duration_ms);
		break;
	case AGENT_EV_ERROR:
		o = json_pack("{s:s, s:s, s:s}", "event", "error", "code", nz(ev->code), "message",
			      nz(ev->message));
		break;
	case AGENT_EV_MEASURING:
		break;
	case AGENT_EV_REGIONS:
		o = regions_json(ev);
		break;
	case AGENT_EV_PLAN: {
		const typeof(ev->plan->u.plan) *p = &ev->plan->u.plan;
		o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s}", "event", "plan",
			      "tier", p->tier, "max_tunnels", (json_int_t)p->max_tunnels,
			      "max_players", (json_int_t)p->max_players, "idle_timeout_s",
			      (json_int_t)p->idle_timeout_s, "bandwidth_bytes",
			      (json_int_t)p->bandwidth_bytes, "used_bytes", (json_int_t)p->used_bytes,
			      "period_end", (json_int_t)p->period_end, "state", p->state, "message",
			      p->message);
		break;
	}
	}
	if (o && ev->trace &&
	    (ev->type == AGENT_EV_PLAYER_OPEN || ev->type == AGENT_EV_PLAYER_CLOSE)) {
		char tr[LOG_TRACE_HEX];
		log_trace_fmt(ev->trace, tr);
		json_object_set_new(o, "trace_id", json_string(tr));
	}
	json_emit(o);
}

/* ---- human ---- */

/* The log line of a player's local connection opening or closing, with the relay's trace id:
 * on stderr in --json mode too (stdout carries the events), not on a terminal (the status line
 * shows the counts there). */
static void log_player(const struct agent_event *ev)
{
	if (ev->type == AGENT_EV_PLAYER_OPEN)
		pr_trace(LOG_INFO, ev->trace, "player %s joined (%u online, %llu joins)",
			 nz(ev->player), ev->active, (unsigned long long)ev->joins);
	else
		pr_trace(LOG_INFO, ev->trace,
			 "player %s left after %llu s, %llu bytes in / %llu out (%u online)",
			 nz(ev->player), (unsigned long long)ev->duration_ms / 1000,
			 (unsigned long long)ev->bytes_in, (unsigned long long)ev->bytes_out,
			 ev->active);
}

static void status_clear(void)
{
	if (rep.status_shown) {
		fputs("\r\033[K", stdout);
		fflush(stdout);
		rep.status_shown = false;
	}
}

static void status_draw(void)
{
	if (!rep.status[0])
		return;
	/* never wider than the terminal: a wrapped line cannot be rewritten in place */
	struct winsize ws;
	int width = 80;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
		width = ws.ws_col;
	fprintf(stdout, "\r\033[K%.*s", width - 1, rep.status);
	fflush(stdout);
	rep.status_shown = true;
}

/* A permanent line: above the status line on a terminal, a plain stdout line otherwise. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	status_clear();
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* The measurement as a table, then what the agent does with it. */
static void regions_human(const struct agent_event *ev)
{
	int w = (int)strlen("endpoint");
	for (unsigned i = 0; i < ev->nregions; i++) {
		int l = (int)strlen(ev->regions[i].endpoint);
		w = l > w ? l : w;
	}
	w = w > 48 ? 48 : w;
	say("%-6s  %-*s  %9s  %9s  %s", "region", w, "endpoint", "median", "min", "ok");
	for (unsigned i = 0; i < ev->nregions; i++) {
		const struct agent_region_result *r = &ev->results[i];
		char med[32] = "-", mn[32] = "-";
		if (r->reachable)
			snprintf(med, sizeof(med), "%.1f ms", r->median_us / 1000.0);
		if (r->ok)
			snprintf(mn, sizeof(mn), "%.1f ms", r->min_us / 1000.0);
		say("%-6s  %-*.*s  %9s  %9s  %u/%d%s%s", ev->regions[i].name, w, w,
		    ev->regions[i].endpoint, med, mn, r->ok, AGENT_PROBE_SAMPLES,
		    !r->reachable && r->error[0] ? "  " : "", !r->reachable ? r->error : "");
	}
	const char *prev = ev->previous >= 0 ? ev->regions[ev->previous].name : NULL;
	if (ev->picked < 0) {
		if (ev->probe_only)
			say("No region is reachable");
		else if (prev)
			say("No region is reachable; staying on region %s", prev);
		else
			say("No region is reachable; trying region %s", ev->regions[0].name);
		return;
	}
	const char *name = ev->regions[ev->picked].name;
	double ms = ev->results[ev->picked].median_us / 1000.0;
	if (ev->probe_only)
		say("Fastest region: %s (%.1f ms)", name, ms);
	else if (prev && ev->picked == ev->previous)
		say("Staying on region %s (%.1f ms)", name, ms);
	else if (prev)
		say("Switching from region %s to region %s (%.1f ms)", prev, name, ms);
	else
		say("Using region %s (%.1f ms)", name, ms);
}

static void report_human(const struct agent_event *ev)
{
	static char hostname[256];
	switch (ev->type) {
	case AGENT_EV_CONNECTING:
		if (rep.tty)
			snprintf(rep.status, sizeof(rep.status), "Connecting to relay %s ...",
				 nz(ev->relay));
		else
			pr_info("connecting to relay %s", nz(ev->relay));
		break;
	case AGENT_EV_TUNNEL_UP:
		snprintf(hostname, sizeof(hostname), "%s", nz(ev->hostname));
		if (ev->from) {
			say("Tunnel moved to relay %s: players join at %s", nz(ev->relay), hostname);
		} else {
			say("Tunnel up: players join at %s", hostname);
			say("Forwarding to %s", nz(rep.local));
		}
		if (!rep.tty)
			pr_info("tunnel up: %s via relay %s (tunnel %s, region %s)", hostname,
				nz(ev->relay), nz(ev->tunnel), nz(ev->region));
		snprintf(rep.status, sizeof(rep.status), "%.255s  players online: %u  joins: %llu%.127s",
			 hostname, ev->active, (unsigned long long)ev->joins, rep.plan_tail);
		break;
	case AGENT_EV_TUNNEL_DOWN:
		say("Tunnel down: %s", nz(ev->reason));
		if (!rep.tty)
			pr_info("tunnel down: %s", nz(ev->reason));
		rep.status[0] = 0;
		break;
	case AGENT_EV_RECONNECTING: {
		const char *still = ev->migrating ? " (the tunnel stays up on the old relay)" : "";
		if (rep.tty)
			snprintf(rep.status, sizeof(rep.status),
				 "Reconnecting in %.1f s (attempt %u)%s%s%s", (double)ev->in_ms / 1000,
				 ev->attempt, ev->reason ? ": " : " ...", nz(ev->reason), still);
		else if (ev->reason)
			pr_warn("%s; retrying in %llu ms (attempt %u)%s", ev->reason,
				(unsigned long long)ev->in_ms, ev->attempt, still);
		else
			pr_info("reconnecting in %llu ms (attempt %u)%s", (unsigned long long)ev->in_ms,
				ev->attempt, still);
		break;
	}
	case AGENT_EV_MIGRATING:
		say("Moving the tunnel from relay %s to %s (%s); players keep playing", nz(ev->relay),
		    nz(ev->to), nz(ev->reason));
		break;
	case AGENT_EV_PLAYER_OPEN:
	case AGENT_EV_PLAYER_CLOSE:
		if (rep.tty) {
			if (hostname[0])
				snprintf(rep.status, sizeof(rep.status),
					 "%.255s  players online: %u  joins: %llu%.127s", hostname,
					 ev->active, (unsigned long long)ev->joins, rep.plan_tail);
		} else {
			log_player(ev);
		}
		break;
	case AGENT_EV_MEASURING:
		if (rep.tty)
			snprintf(rep.status, sizeof(rep.status), "Measuring the latency to %u regions ...",
				 ev->nregions);
		else
			pr_info("measuring the latency to %u regions", ev->nregions);
		break;
	case AGENT_EV_REGIONS:
		regions_human(ev);
		rep.status[0] = 0;
		break;
	case AGENT_EV_PLAN: {
		const typeof(ev->plan->u.plan) *p = &ev->plan->u.plan;
		char line[400], msg[300], used[32], limit[32];
		agent_plan_describe(ev->plan, line, sizeof(line));
		printable(p->message, msg, sizeof(msg));
		if (ev->plan_changed) {
			say("%s", line);
			if (msg[0])
				say("%s", msg);
		} else {
			pr_debug("%s", line);
		}
		agent_fmt_bytes(p->used_bytes, used, sizeof(used));
		agent_fmt_bytes(p->bandwidth_bytes, limit, sizeof(limit));
		if (!strcmp(p->state, "capped"))
			snprintf(rep.plan_tail, sizeof(rep.plan_tail),
				 "  BANDWIDTH LIMIT REACHED (%s of %s)", used, limit);
		else if (p->bandwidth_bytes)
			snprintf(rep.plan_tail, sizeof(rep.plan_tail), "  %s of %s used", used,
				 limit);
		else
			snprintf(rep.plan_tail, sizeof(rep.plan_tail), "  %s used", used);
		/* the status line (tty) carries the usage; rebuild it with the new tail */
		if (rep.tty && hostname[0] && ev->type == AGENT_EV_PLAN)
			snprintf(rep.status, sizeof(rep.status),
				 "%.255s  players online: %u  joins: %llu%.127s", hostname, ev->active,
				 (unsigned long long)ev->joins, rep.plan_tail);
		break;
	}
	case AGENT_EV_ERROR:
		status_clear();
		if (!strcmp(nz(ev->code), "local_unreachable"))
			pr_warn("%s", nz(ev->message));
		else
			pr_err("%s (%s)", nz(ev->message), nz(ev->code));
		break;
	}
	if (rep.tty)
		status_draw();
}

void agent_report(const struct agent_event *ev)
{
	if (rep.json) {
		report_json(ev);
		if (!rep.tty &&
		    (ev->type == AGENT_EV_PLAYER_OPEN || ev->type == AGENT_EV_PLAYER_CLOSE))
			log_player(ev);
	} else
		report_human(ev);
}

void agent_report_finish(void)
{
	if (rep.tty && rep.status_shown) {
		fputc('\n', stdout);
		fflush(stdout);
		rep.status_shown = false;
	}
}
