/* Unit tests' throwaway TLS credentials. Include after <cmocka.h> (failures are cmocka asserts). */
#ifndef DVV_TEST_CERT_H
#define DVV_TEST_CERT_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A throwaway self-signed P-256 certificate and key as PEM files (tls_server_ctx wants paths). */
static inline void make_cert(char cert_path[64], char key_path[64])
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	assert_non_null(pk);
	X509 *x = X509_new();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, n);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	strcpy(cert_path, "/tmp/dvv-test-cert-XXXXXX");
	strcpy(key_path, "/tmp/dvv-test-key-XXXXXX");
	int cfd = mkstemp(cert_path), kfd = mkstemp(key_path);
	assert_true(cfd >= 0 && kfd >= 0);
	FILE *cf = fdopen(cfd, "w"), *kf = fdopen(kfd, "w");
	assert_true(PEM_write_X509(cf, x) == 1);
	assert_true(PEM_write_PrivateKey(kf, pk, NULL, NULL, 0, NULL, NULL) == 1);
	fclose(cf);
	fclose(kf);
	X509_free(x);
	EVP_PKEY_free(pk);
}

#endif
