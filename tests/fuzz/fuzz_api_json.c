/* libFuzzer target for dvv-api's request body validators (api/body.c) and the plans loader
 * (api/plans.c): the code that reads untrusted JSON before any database work. Every input goes
 * through each validator; a validator that accepts must hand back what it promises (bounded,
 * NUL-terminated strings that pass the syntax rules, numbers in range), one that refuses must
 * give a 4xx status and a code. Crashes, leaks, UB or a broken promise (abort) are findings.
 *
 *   make fuzz && build-fuzz/fuzz_api_json -max_total_time=60 tests/fuzz/corpus/fuzz_api_json
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "plans.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_err(int ret, const struct body_err *e)
{
	if (ret == 0)
		return;
	if (e->status < 400 || e->status > 499 || !e->code[0] || !memchr(e->code, 0, sizeof(e->code)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	static const char *const extra[] = { "reserved-one", NULL };
	struct body_creds cr;
	struct body_token bt;
	struct body_label bl;
	struct body_err e;
	struct plans *pl;
	char err[256];
	int ret;

	for (int signup = 0; signup < 2; signup++) {
		memset(&e, 0, sizeof(e));
		ret = body_creds(body, size, signup, &cr, &e);
		check_err(ret, &e);
		if (!ret) {
			size_t pw = strnlen(cr.password, sizeof(cr.password));

			if (!body_valid_email(cr.email) || pw == sizeof(cr.password) || pw == 0 ||
			    (signup && pw < PASSWORD_MIN))
				abort();
		}
	}
	memset(&e, 0, sizeof(e));
	ret = body_token(body, size, &bt, &e);
	check_err(ret, &e);
	if (!ret && (bt.ttl_days < 1 || bt.ttl_days > 365 || !bt.tunnel_id[0] ||
		     strnlen(bt.tunnel_id, sizeof(bt.tunnel_id)) == sizeof(bt.tunnel_id)))
		abort();
	memset(&e, 0, sizeof(e));
	check_err(body_empty_object(body, size, &e), &e);
	memset(&e, 0, sizeof(e));
	ret = body_label(body, size, extra, &bl, &e);
	check_err(ret, &e);
	if (!ret && (!body_valid_label(bl.label) || body_reserved(bl.label, extra)))
		abort();
	pl = malloc(sizeof(*pl));
	if (pl && plans_parse(body, size, pl, err, sizeof(err)) == 0) {
		if (pl->n < 1 || pl->n > PLANS_MAX || !plans_default(pl))
			abort();
		for (int i = 0; i < pl->n; i++)
			if (!plans_valid_tier(pl->plan[i].tier) || pl->plan[i].max_tunnels < 1 ||
			    plans_find(pl, pl->plan[i].tier) != &pl->plan[i])
				abort();
	}
	free(pl);
	return 0;
}
