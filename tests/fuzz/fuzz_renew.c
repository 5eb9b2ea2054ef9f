/* libFuzzer target: renew_due (client/renew.c), which reads iat and exp out of the token the
 * DVV API answers a renewal with (base64url, then JSON: untrusted bytes from the network).
 * Whatever the input: no crash, and the answer is -1 or a time after 0 that lies between the
 * payload's iat and exp when they parse. */
#include "renew.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	int64_t due = renew_due(s);
	if (due != -1 && due <= 0)
		abort();
	free(s);
	return 0;
}
