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
#include <unistd.h>

static struct {
	bool json;
	bool tty;
	bool status_shown; /* the cursor sits at the end of the in-place status line */
	const char *local;
	char status[320];
} rep;

void agent_report_init(bool json, const char *local)
{
	rep.json = json;
	rep.tty = !json && isatty(STDOUT_FILENO);
	rep.local = local;
	rep.status_shown = false;
	rep.status[0] = 0;
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
	}
	json_emit(o);
}

/* ---- human ---- */

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
		snprintf(rep.status, sizeof(rep.status), "%s  players online: %u  joins: %llu", hostname,
			 ev->active, (unsigned long long)ev->joins);
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
					 "%s  players online: %u  joins: %llu", hostname, ev->active,
					 (unsigned long long)ev->joins);
		} else if (ev->type == AGENT_EV_PLAYER_OPEN) {
			pr_info("player %s joined (%u online, %llu joins)", nz(ev->player),
				ev->active, (unsigned long long)ev->joins);
		} else {
			pr_info("player %s left after %llu s, %llu bytes in / %llu out (%u online)",
				nz(ev->player), (unsigned long long)ev->duration_ms / 1000,
				(unsigned long long)ev->bytes_in, (unsigned long long)ev->bytes_out,
				ev->active);
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
	if (rep.json)
		report_json(ev);
	else
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
