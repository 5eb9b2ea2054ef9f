/* libFuzzer target: the control-protocol decoder (frames + JSON payloads, STATUS and WELCOME
 * peers included) and the data connection header parser, fed arbitrary bytes. Every
 * successfully decoded message must re-encode and decode to the same type; a STATUS must point
 * inside the input and come back byte for byte, WELCOME peers must survive the trip.
 * Seeds: tests/fuzz/corpus/fuzz_ctl/. */
#include "proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ctl_msg m, m2;
	static uint8_t out[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	size_t off = 0;
	while (off < size) {
		size_t used = 0;
		char err[160];
		int rc = ctl_decode(data + off, size - off, &m, &used, err, sizeof(err));
		if (rc != 0)
			break;
		if (used == 0 || used > size - off)
			abort();
		off += used;
		if (m.type == CTL_STATUS &&
		    (m.u.status.json != (const char *)data + off - used + CTL_HDR_LEN ||
		     m.u.status.len != used - CTL_HDR_LEN))
			abort();
		if (m.type == CTL_WELCOME && m.u.welcome.npeers > CTL_PEERS_MAX)
			abort();
		if (m.type >= CTL_HELLO && m.type <= CTL_TYPE_LAST) {
			int n = ctl_encode(&m, out, sizeof(out));
			if (m.type == CTL_STATUS && n < 0)
				abort(); /* what the decoder accepts, the encoder must take */
			if (n > 0) {
				size_t u2 = 0;
				if (ctl_decode(out, (size_t)n, &m2, &u2, err, sizeof(err)) != 0 ||
				    m2.type != m.type || u2 != (size_t)n)
					abort();
				if (m.type == CTL_STATUS &&
				    (m2.u.status.len != m.u.status.len ||
				     memcmp(m2.u.status.json, m.u.status.json, m.u.status.len)))
					abort();
				if (m.type == CTL_WELCOME) {
					if (m2.u.welcome.npeers != m.u.welcome.npeers)
						abort();
					for (uint32_t i = 0; i < m.u.welcome.npeers; i++)
						if (strcmp(m2.u.welcome.peers[i], m.u.welcome.peers[i]))
							abort();
				}
			}
		}
	}
	if (size >= DATA_HDR_FIXED) {
		int body = data_hdr_fixed(data);
		if (body >= 0) {
			struct data_hdr h;
			data_hdr_body(data + DATA_HDR_FIXED, size - DATA_HDR_FIXED, &h);
			/* the agent's parser: the whole header, trace id included */
			if (size >= DATA_HDR_FIXED + (size_t)body &&
			    data_hdr_parse(data, DATA_HDR_FIXED + (size_t)body, &h) == 0) {
				uint8_t out[DATA_HDR_LEN_MAX];
				struct data_hdr back;
				/* what parses re-encodes to a header that parses to the same trace */
				size_t n = data_hdr_encode(&h, out);
				if (data_hdr_parse(out, n, &back) || back.trace != h.trace)
					abort();
			}
		}
	}
	return 0;
}
