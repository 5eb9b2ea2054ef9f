/* --advertise-addr (advertise.h): which of a host's addresses a relay publishes for forwarding,
 * on interface lists built like getifaddrs() returns them (a Railway container: lo, eth0 with an
 * IPv4 address and a private IPv6 address plus link-local), and the DNS match that finds this
 * replica's own address among the addresses of a name shared by all replicas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "advertise.h"

#define MAXIF 8
static struct ifaddrs ifs[MAXIF];
static struct sockaddr_storage addrs[MAXIF];
static int nifs;
static char err[256];

static void add_if(const char *name, unsigned flags, const char *ip)
{
	struct ifaddrs *i = &ifs[nifs];
	memset(i, 0, sizeof(*i));
	memset(&addrs[nifs], 0, sizeof(addrs[nifs]));
	i->ifa_name = (char *)name;
	i->ifa_flags = flags;
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&addrs[nifs];
		s->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)&addrs[nifs];
		s->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s->sin_addr), 1);
	}
	i->ifa_addr = (struct sockaddr *)&addrs[nifs];
	if (nifs)
		ifs[nifs - 1].ifa_next = i;
	nifs++;
}

/* lo, then eth0 with link-local first (as the kernel lists it), private IPv6, then IPv4 */
static int railway_like(void **state)
{
	(void)state;
	nifs = 0;
	add_if("lo", IFF_UP | IFF_LOOPBACK, "127.0.0.1");
	add_if("lo", IFF_UP | IFF_LOOPBACK, "::1");
	add_if("eth0", IFF_UP, "fe80::1");
	add_if("eth0", IFF_UP, "fd12:3456:789a::2");
	add_if("eth1", IFF_UP, "10.250.0.7");
	add_if("eth2", 0, "192.168.9.9"); /* down */
	return 0;
}

static const char *pick(const char *spec, const struct addrinfo *dns, int want_rc)
{
	static char out[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss;
	err[0] = 0;
	int rc = advertise_select(spec, ifs, dns, &ss, err, sizeof(err));
	assert_int_equal(rc, want_rc);
	if (rc)
		return NULL;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, sizeof(out));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, sizeof(out));
	return out;
}

static void auto_prefers_ipv4_and_skips_loopback(void **state)
{
	(void)state;
	assert_string_equal(pick("auto", NULL, 0), "10.250.0.7");
	assert_string_equal(pick("auto4", NULL, 0), "10.250.0.7");
}

static void auto6_skips_link_local(void **state)
{
	(void)state;
	assert_string_equal(pick("auto6", NULL, 0), "fd12:3456:789a::2");
}

static void an_interface_by_name(void **state)
{
	(void)state;
	assert_string_equal(pick("iface:eth0", NULL, 0), "fd12:3456:789a::2");
	assert_string_equal(pick("iface6:eth0", NULL, 0), "fd12:3456:789a::2");
	assert_string_equal(pick("iface:eth1", NULL, 0), "10.250.0.7");
	assert_null(pick("iface4:eth0", NULL, -EADDRNOTAVAIL));
	assert_non_null(strstr(err, "no usable address"));
	assert_null(pick("iface:eth2", NULL, -EADDRNOTAVAIL)); /* down */
	assert_null(pick("iface:lo", NULL, -EADDRNOTAVAIL));
	assert_null(pick("iface:nosuch", NULL, -EADDRNOTAVAIL));
}

static void bad_specs_are_refused(void **state)
{
	(void)state;
	assert_null(pick("eth0", NULL, -EINVAL));
	assert_null(pick("iface:", NULL, -EINVAL));
	assert_null(pick("", NULL, -EINVAL));
	assert_non_null(strstr(err, "want auto"));
}

static struct addrinfo *ai(struct addrinfo *next, const char *ip6)
{
	struct addrinfo *a = calloc(1, sizeof(*a) + sizeof(struct sockaddr_in6));
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)(a + 1);
	s->sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, ip6, &s->sin6_addr), 1);
	a->ai_family = AF_INET6;
	a->ai_addr = (struct sockaddr *)s;
	a->ai_addrlen = sizeof(*s);
	a->ai_next = next;
	return a;
}

static void dns_picks_our_own_replica(void **state)
{
	(void)state;
	/* the service's private name lists every replica; ours is the one on our interface */
	struct addrinfo *l = ai(ai(ai(NULL, "fd12:3456:789a::9"), "fd12:3456:789a::2"),
				"fd12:3456:789a::5");
	assert_string_equal(pick("dns:relay.railway.internal", l, 0), "fd12:3456:789a::2");
	setenv("RAILWAY_PRIVATE_DOMAIN", "relay.railway.internal", 1);
	assert_string_equal(pick("railway", l, 0), "fd12:3456:789a::2");
	/* a name of other hosts only */
	struct addrinfo *other = ai(NULL, "fd12:3456:789a::9");
	assert_null(pick("dns:relay.railway.internal", other, -EADDRNOTAVAIL));
	assert_non_null(strstr(err, "none of"));
	/* a link-local match is never published */
	struct addrinfo *ll = ai(NULL, "fe80::1");
	assert_null(pick("dns:x", ll, -EADDRNOTAVAIL));
	while (l) {
		struct addrinfo *n = l->ai_next;
		free(l);
		l = n;
	}
	free(other);
	free(ll);
}

static void dns_names_come_from_the_spec_or_railway(void **state)
{
	(void)state;
	char name[64];
	assert_int_equal(advertise_dns_name("dns:a.b", name, sizeof(name), err, sizeof(err)), 0);
	assert_string_equal(name, "a.b");
	assert_int_equal(advertise_dns_name("auto", name, sizeof(name), err, sizeof(err)), 0);
	assert_string_equal(name, "");
	setenv("RAILWAY_PRIVATE_DOMAIN", "dvv-relay.railway.internal", 1);
	assert_int_equal(advertise_dns_name("railway", name, sizeof(name), err, sizeof(err)), 0);
	assert_string_equal(name, "dvv-relay.railway.internal");
	unsetenv("RAILWAY_PRIVATE_DOMAIN");
	assert_int_equal(advertise_dns_name("railway", name, sizeof(name), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "RAILWAY_PRIVATE_DOMAIN"));
	assert_int_equal(advertise_dns_name("dns:", name, sizeof(name), err, sizeof(err)), -EINVAL);
}

static void resolve_on_this_host_formats_the_port(void **state)
{
	(void)state;
	/* the real host: whatever its first usable address is, the port and brackets are right */
	char out[80];
	int rc = advertise_resolve("auto", 7001, out, sizeof(out), err, sizeof(err));
	if (rc == -EADDRNOTAVAIL)
		return; /* a host with loopback only (an empty network namespace) */
	assert_int_equal(rc, 0);
	size_t n = strlen(out);
	assert_true(n > 5 && !strcmp(out + n - 5, ":7001"));
	if (strchr(out, ':') != out + n - 5)
		assert_true(out[0] == '[' && out[n - 6] == ']');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(auto_prefers_ipv4_and_skips_loopback, railway_like),
		cmocka_unit_test_setup(auto6_skips_link_local, railway_like),
		cmocka_unit_test_setup(an_interface_by_name, railway_like),
		cmocka_unit_test_setup(bad_specs_are_refused, railway_like),
		cmocka_unit_test_setup(dns_picks_our_own_replica, railway_like),
		cmocka_unit_test_setup(dns_names_come_from_the_spec_or_railway, railway_like),
		cmocka_unit_test(resolve_on_this_host_formats_the_port),
	};
	return cmocka_run_group_tests_name("advertise", tests, NULL, NULL);
}
