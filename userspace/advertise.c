/* --advertise-addr (advertise.h): picks the address this relay publishes for forwarding from
 * its interfaces or from a name that resolves to it. */
#include "advertise.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool usable(const struct ifaddrs *i, int family)
{
	if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
		return false;
	int f = i->ifa_addr->sa_family;
	if (f != AF_INET && f != AF_INET6)
		return false;
	if (family && f != family)
		return false;
	if (f == AF_INET6 &&
	    IN6_IS_ADDR_LINKLOCAL(&((const struct sockaddr_in6 *)(const void *)i->ifa_addr)->sin6_addr))
		return false;
	return true;
}

static void copy_addr(struct sockaddr_storage *out, const struct sockaddr *sa)
{
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *o = (struct sockaddr_in *)out;
		o->sin_family = AF_INET;
		o->sin_addr = ((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else {
		struct sockaddr_in6 *o = (struct sockaddr_in6 *)out;
		o->sin6_family = AF_INET6;
		o->sin6_addr = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	}
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)(const void *)b)->sin_addr.s_addr;
	return !memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
		       &((const struct sockaddr_in6 *)(const void *)b)->sin6_addr, 16);
}

/* First usable address of family (0: IPv4 first, then IPv6) on iface (NULL: any). */
static const struct ifaddrs *first(const struct ifaddrs *ifs, const char *iface, int family)
{
	if (!family) {
		const struct ifaddrs *i = first(ifs, iface, AF_INET);
		return i ? i : first(ifs, iface, AF_INET6);
	}
	for (const struct ifaddrs *i = ifs; i; i = i->ifa_next)
		if (usable(i, family) && (!iface || (i->ifa_name && !strcmp(i->ifa_name, iface))))
			return i;
	return NULL;
}

int advertise_dns_name(const char *spec, char *name, size_t len, char *err, size_t errlen)
{
	const char *n = NULL;
	if (!strncmp(spec, "dns:", 4)) {
		n = spec + 4;
	} else if (!strcmp(spec, "railway")) {
		n = getenv("RAILWAY_PRIVATE_DOMAIN");
		if (!n || !*n) {
			snprintf(err, errlen, "--advertise-addr railway: RAILWAY_PRIVATE_DOMAIN is not set "
					      "(Railway sets it when private networking is on)");
			return -EINVAL;
		}
	}
	if (!n) {
		if (len)
			name[0] = 0;
		return 0;
	}
	if (!*n || strlen(n) >= len) {
		snprintf(err, errlen, "--advertise-addr %s: want a host name of 1..%zu bytes", spec,
			 len - 1);
		return -EINVAL;
	}
	memcpy(name, n, strlen(n) + 1);
	return 0;
}

int advertise_select(const char *spec, const struct ifaddrs *ifs, const struct addrinfo *dns,
		     struct sockaddr_storage *out, char *err, size_t errlen)
{
	const struct ifaddrs *hit = NULL;
	if (!strncmp(spec, "dns:", 4) || !strcmp(spec, "railway")) {
		for (const struct addrinfo *a = dns; a; a = a->ai_next) {
			if (!a->ai_addr)
				continue;
			for (const struct ifaddrs *i = ifs; i; i = i->ifa_next)
				if (usable(i, 0) && same_ip(i->ifa_addr, a->ai_addr)) {
					copy_addr(out, a->ai_addr);
					return 0;
				}
		}
		snprintf(err, errlen, "--advertise-addr %s: %s of the name's addresses is an address "
				      "of this host", spec, dns ? "none" : "it has no addresses, so none");
		return -EADDRNOTAVAIL;
	}
	if (!strcmp(spec, "auto"))
		hit = first(ifs, NULL, 0);
	else if (!strcmp(spec, "auto4"))
		hit = first(ifs, NULL, AF_INET);
	else if (!strcmp(spec, "auto6"))
		hit = first(ifs, NULL, AF_INET6);
	else if (!strncmp(spec, "iface:", 6) && spec[6])
		hit = first(ifs, spec + 6, 0);
	else if (!strncmp(spec, "iface4:", 7) && spec[7])
		hit = first(ifs, spec + 7, AF_INET);
	else if (!strncmp(spec, "iface6:", 7) && spec[7])
		hit = first(ifs, spec + 7, AF_INET6);
	else {
		snprintf(err, errlen, "--advertise-addr %s: want auto, auto4, auto6, iface:NAME, "
				      "iface4:NAME, iface6:NAME, dns:NAME or railway", spec);
		return -EINVAL;
	}
	if (!hit) {
		snprintf(err, errlen, "--advertise-addr %s: no usable address (up, not loopback, not "
				      "IPv6 link-local) fits", spec);
		return -EADDRNOTAVAIL;
	}
	copy_addr(out, hit->ifa_addr);
	return 0;
}

int advertise_resolve(const char *spec, uint16_t port, char *out, size_t outlen, char *err,
		      size_t errlen)
{
	struct ifaddrs *ifs = NULL;
	struct addrinfo *dns = NULL;
	struct sockaddr_storage ss;
	char name[256];
	int rc = advertise_dns_name(spec, name, sizeof(name), err, errlen);
	if (rc)
		goto out;
	if (getifaddrs(&ifs) < 0) {
		rc = -errno;
		snprintf(err, errlen, "--advertise-addr: getifaddrs: %s", strerror(errno));
		goto out;
	}
	if (name[0]) {
		struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
		int g = getaddrinfo(name, NULL, &hints, &dns);
		if (g) {
			snprintf(err, errlen, "--advertise-addr %s: cannot resolve %s: %s", spec, name,
				 gai_strerror(g));
			rc = -EADDRNOTAVAIL;
			dns = NULL;
			goto out;
		}
	}
	if ((rc = advertise_select(spec, ifs, dns, &ss, err, errlen)))
		goto out;
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
	net_addr_fmt((const struct sockaddr *)&ss, out, outlen);
out:
	if (dns)
		freeaddrinfo(dns);
	if (ifs)
		freeifaddrs(ifs);
	return rc;
}
