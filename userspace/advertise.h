/* --advertise-addr: how this relay finds the address other relays dial to forward players to it
 * (its --internal-listen port), when --internal-addr does not give it outright. On Railway each
 * replica has a private IPv6 address on railway.internal that no flag can know in advance.
 *
 * Specs (the port is always --internal-listen's):
 *   auto           first usable address of any interface, IPv4 first, then IPv6
 *   auto4, auto6   first usable address of that family
 *   iface:NAME     first usable address of interface NAME (IPv4 first); iface4:, iface6: one family
 *   dns:NAME       the address NAME resolves to that is also an address of this host (a name
 *                  shared by several replicas resolves to all of them: ours is the local one)
 *   railway        dns:$RAILWAY_PRIVATE_DOMAIN
 * Usable: the interface is up and not loopback, the address is not IPv6 link-local (fe80::/10,
 * which needs a scope no other host shares). */
#ifndef DVV_ADVERTISE_H
#define DVV_ADVERTISE_H

#include <ifaddrs.h>
#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The selection itself, pure: ifs is the host's interface list (getifaddrs()), dns what the
 * spec's name resolved to (NULL unless a dns:/railway spec). Writes the address (port 0) to
 * out. 0, or -EINVAL (bad spec) / -EADDRNOTAVAIL (nothing fits) with err set. */
int advertise_select(const char *spec, const struct ifaddrs *ifs, const struct addrinfo *dns,
		     struct sockaddr_storage *out, char *err, size_t errlen);

/* The name a dns:/railway spec resolves ("" for other specs; railway: from the environment).
 * 0 or -EINVAL with err set. */
int advertise_dns_name(const char *spec, char *name, size_t len, char *err, size_t errlen);

/* The whole thing for the running host: getifaddrs(), getaddrinfo() when the spec names a
 * name, advertise_select(), then "addr:port" / "[addr]:port" into out. 0 or -errno, err set. */
int advertise_resolve(const char *spec, uint16_t port, char *out, size_t outlen, char *err,
		      size_t errlen);

#endif
