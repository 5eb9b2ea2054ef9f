/* libFuzzer target: status_sanitize(), the parser of an agent's CTL_STATUS JSON (untrusted), and
 * the offline renderers that read what it stored. Whatever the input, the sanitized form must be
 * a bounded JSON object that sanitizes to itself, and every renderer must accept it. */
#include "status.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *clean = NULL, *again = NULL, *off = NULL, err[160];
	size_t clen, alen, olen;
	uint8_t legacy[2048], pkt[STATUS_STORED_MAX + 64];
	char text[STATUS_MOTD_TEXT_MAX];
	status_component_text((const char *)data, size, text, sizeof(text));
	if (strlen(text) >= sizeof(text))
		abort();
	if (status_sanitize((const char *)data, size, &clean, &clen, err, sizeof(err)))
		return 0;
	if (clen > STATUS_STORED_MAX || strlen(clean) != clen)
		abort();
	/* sanitizing is idempotent: the stored form passes through unchanged */
	if (status_sanitize(clean, clen, &again, &alen, err, sizeof(err)) || alen != clen ||
	    memcmp(clean, again, clen))
		abort();
	if (status_render_offline(clean, clen, &off, &olen) || olen > STATUS_STORED_MAX + 1024)
		abort();
	if (!status_packet(off, olen, pkt, sizeof(pkt)))
		abort();
	if (!status_render_legacy(clean, clen, -1, legacy, sizeof(legacy)))
		abort();
	free(off);
	free(again);
	free(clean);
	return 0;
}
