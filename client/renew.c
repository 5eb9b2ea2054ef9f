/* Token renewal for a long-running agent (renew.h): one thread that sleeps until the stored
 * token is due, asks dvv-api for a fresh one and saves it. */
#include "renew.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cmd.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "proto.h"

struct renew {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	char path[4200];
	char api[CREDS_API_MAX];
	char token[CTL_TOKEN_MAX + 1]; /* the newest token (under mu) */
};

int64_t renew_due(const char *token)
{
	json_t *j = agent_jwt_payload(token);
	json_t *iat = json_object_get(j, "iat"), *exp = json_object_get(j, "exp");
	int64_t due = -1;
	if (json_is_integer(iat) && json_is_integer(exp) &&
	    json_integer_value(exp) > json_integer_value(iat) && json_integer_value(iat) > 0)
		due = json_integer_value(iat) +
		      (json_integer_value(exp) - json_integer_value(iat) + 1) / 2;
	json_decref(j);
	return due;
}

/* Sleep until wall-clock time `until` or a stop; true when stopped. */
static bool renew_sleep(struct renew *r, int64_t until)
{
	struct timespec ts = { .tv_sec = (time_t)until };
	bool stop;
	pthread_mutex_lock(&r->mu);
	while (!r->stop && wall_s() < until)
		if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT)
			break;
	stop = r->stop;
	pthread_mutex_unlock(&r->mu);
	return stop;
}

/* Store the new token in the credentials file, if it still holds `old`. */
static void renew_save(struct renew *r, const char *old, const char *fresh)
{
	char dir[4200], err[600];
	struct agent_creds c;
	snprintf(dir, sizeof(dir), "%s", r->path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	if (creds_load(r->path, &c, err, sizeof(err))) {
		pr_warn("token renewed, but %s could not be read to store it: %s (the agent keeps "
			"using it until it exits)", r->path, err);
		return;
	}
	if (strcmp(c.token, old)) {
		pr_info("token renewed; %s now holds another token (dvv login), left as it is",
			r->path);
	} else {
		snprintf(c.token, sizeof(c.token), "%s", fresh);
		if (creds_save(dir, r->path, &c, err, sizeof(err)))
			pr_warn("token renewed, but it could not be saved: %s", err);
	}
	creds_clear(&c);
}

/* One attempt. Returns the next wall-clock time to try, or -1 to stop for good. */
static int64_t renew_once(struct renew *r, char *cur)
{
	char url[CREDS_API_MAX + 32], err[600];
	struct http_opts o = { .ca_file = NULL, .timeout_ms = 20000 };
	struct http_resp resp;
	int64_t next = wall_s() + RENEW_RETRY_S;
	size_t l = strlen(r->api);
	while (l && r->api[l - 1] == '/')
		l--;
	snprintf(url, sizeof(url), "%.*s/v1/tokens/renew", (int)l, r->api);
	if (http_request(&o, "POST", url, cur, "{}", &resp, err, sizeof(err))) {
		pr_warn("token renewal: the DVV API at %s: %s; trying again in %d s", r->api, err,
			RENEW_RETRY_S);
		return next;
	}
	json_t *j = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
	const char *tok = json_string_value(json_object_get(j, "token"));
	const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	if (resp.status == 201 && tok && strlen(tok) <= CTL_TOKEN_MAX && renew_due(tok) > 0) {
		renew_save(r, cur, tok);
		pthread_mutex_lock(&r->mu);
		snprintf(r->token, sizeof(r->token), "%s", tok);
		pthread_mutex_unlock(&r->mu);
		snprintf(cur, CTL_TOKEN_MAX + 1, "%s", tok);
		const char *exp = json_string_value(json_object_get(j, "expires_at"));
		pr_info("token renewed: the new one expires %s", exp ? exp : "(unknown)");
		next = renew_due(cur);
	} else if (resp.status == 409 &&
		   !strcmp(json_string_value(json_object_get(json_object_get(j, "error"), "code")) ?: "",
			   "already_renewed")) {
		/* renewed by an earlier call whose answer never arrived (or by another copy of
		 * this token): nothing more to get; the old token runs until it expires */
		pr_warn("token renewal refused: %s; the tunnel runs until the token expires (run "
			"'dvv tunnels use ID' or 'dvv login --token TOKEN' with a new one)",
			msg ? msg : "already renewed");
		next = -1;
	} else if (resp.status == 409) {
		long wait = resp.retry_after[0] ? strtol(resp.retry_after, NULL, 10) : 0;
		next = wall_s() + (wait > 0 && wait < 400L * 86400 ? wait : RENEW_RETRY_S);
	} else if (resp.status == 401) {
		pr_warn("token renewal refused: %s; the tunnel runs until the token expires "
			"(create a new token in the dashboard and run 'dvv login --token TOKEN')",
			msg ? msg : "unauthorized");
		next = -1;
	} else if (resp.status == 404) {
		pr_info("token renewal: the DVV API at %s does not offer it; the token runs until "
			"it expires", r->api);
		next = -1;
	} else {
		pr_warn("token renewal: the DVV API answered %d%s%s; trying again in %d s",
			resp.status, msg ? ": " : "", msg ? msg : "", RENEW_RETRY_S);
	}
	json_decref(j);
	if (resp.body)
		explicit_bzero(resp.body, resp.body_len);
	http_resp_free(&resp);
	return next;
}

static void *renew_main(void *arg)
{
	struct renew *r = arg;
	char *cur = malloc(CTL_TOKEN_MAX + 1);
	if (!cur)
		return NULL;
	renew_token(r, cur, CTL_TOKEN_MAX + 1);
	int64_t next = renew_due(cur);
	while (next > 0) {
		/* agents that started together do not all ask in the same second; an overdue
		 * token (an agent started after half its life) asks at once */
		if (next > wall_s())
			next += (int64_t)arc4random_uniform(300);
		if (renew_sleep(r, next))
			break;
		next = renew_once(r, cur);
	}
	explicit_bzero(cur, CTL_TOKEN_MAX + 1);
	free(cur);
	return NULL;
}

int renew_start(const char *path, struct renew **out)
{
	struct agent_creds c;
	char err[600];
	int rc;
	*out = NULL;
	if ((rc = creds_load(path, &c, err, sizeof(err))))
		return rc;
	if (!c.api[0] || !c.token[0] || renew_due(c.token) < 0) {
		creds_clear(&c);
		return 0;
	}
	struct renew *r = calloc(1, sizeof(*r));
	if (!r) {
		creds_clear(&c);
		return -ENOMEM;
	}
	snprintf(r->path, sizeof(r->path), "%s", path);
	snprintf(r->api, sizeof(r->api), "%s", c.api);
	snprintf(r->token, sizeof(r->token), "%s", c.token);
	creds_clear(&c);
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_REALTIME);
	pthread_cond_init(&r->cv, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = pthread_create(&r->thread, NULL, renew_main, r))) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		explicit_bzero(r->token, sizeof(r->token));
		free(r);
		return -rc;
	}
	*out = r;
	return 0;
}

void renew_token(struct renew *r, char *out, size_t cap)
{
	pthread_mutex_lock(&r->mu);
	snprintf(out, cap, "%s", r->token);
	pthread_mutex_unlock(&r->mu);
}

void renew_stop(struct renew *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	explicit_bzero(r->token, sizeof(r->token));
	free(r);
}
