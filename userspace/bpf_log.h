/* libbpf's messages through the relay's log. */
#pragma once

/* Install once before loading any BPF object (idempotent). libbpf speaks one level quieter
 * than it asks for (a WARN is info here: a failed load is reported by the caller, with the
 * reason). A verifier log can run to thousands of lines with the reason for a rejection at
 * its end: it is logged whole up to BPF_LOG_MAX_LINES, beyond that its head and its tail. */
void bpf_log_install(void);

/* What to tell an operator about a failed BPF load or attach (-errno): the capability or
 * kernel feature that is most likely missing. */
const char *bpf_load_hint(int rc);

#define BPF_LOG_MAX_LINES 400
