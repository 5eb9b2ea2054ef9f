// SPDX-License-Identifier: GPL-2.0
/* The smallest sockmap set-up that shows how this kernel behaves (tests/splice/kernel_probe.c):
 * a verdict map with this program, a program-less target map, and a peer table. No DVV code. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* Sockets whose received bytes go through probe_verdict (userspace inserts and removes). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16);
	__type(key, __u64);
	__type(value, __u64);
} probe_active SEC(".maps");

/* Every socket of the pair: redirect targets (userspace inserts). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16);
	__type(key, __u64);
	__type(value, __u64);
} probe_targets SEC(".maps");

/* cookie -> peer cookie (userspace); a socket with no entry gets SK_PASS. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u64);
	__type(value, __u64);
} probe_peer SEC(".maps");

SEC("sk_skb/stream_verdict")
int probe_verdict(struct __sk_buff *skb)
{
	__u64 cookie, *peer;

	if (!skb->len)
		return 0; /* SK_DROP: a bare FIN */
	cookie = bpf_get_socket_cookie(skb);
	peer = bpf_map_lookup_elem(&probe_peer, &cookie);
	if (!peer)
		return 1; /* SK_PASS */
	return bpf_sk_redirect_hash(skb, &probe_targets, peer, 0);
}

char LICENSE[] SEC("license") = "GPL";
