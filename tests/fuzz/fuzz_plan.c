/* libFuzzer target: the parsers of what the relay reads from Redis for plans - the plan hash
 * (plan_from_hash) and a control event's fields (events_parse). The input is split at NUL bytes
 * into field/value strings. Whatever it is, a parse either refuses or yields values within
 * their documented bounds. */
#include "events.h"
#include "plan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *kv[64];
	size_t len[64];
	unsigned long ulen[64];
	char *copy = malloc(size + 1), err[96];
	size_t n = 0, start = 0;
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = 0;
	for (size_t i = 0; i <= size && n < 64; i++)
		if (i == size || copy[i] == 0) {
			kv[n] = copy + start;
			len[n] = i - start;
			ulen[n++] = (unsigned long)(i - start);
			start = i + 1;
		}
	struct plan_limits p;
	if (plan_from_hash(&p, kv, len, n, err, sizeof(err)) == 0) {
		size_t tl = strlen(p.tier);
		if (tl < 1 || tl > 16 || p.priority > 1 || strlen(p.status) >= sizeof(p.status))
			abort();
	}
	struct events_entry ev;
	if (events_parse(kv, ulen, n, &ev) == 0 && (!ev.type || !ev.sub || strlen(ev.sub) > 64))
		abort();
	free(copy);
	return 0;
}
