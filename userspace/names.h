/* Random tunnel names: adjective-noun, e.g. "sleepy-creeper". */
#ifndef DVV_NAMES_H
#define DVV_NAMES_H

#include <stddef.h>

/* Writes a random "adjective-noun" label; with attempt >= 4 a two-digit suffix is added
 * ("sleepy-creeper-42") so registration still succeeds when the plain space is crowded. */
void names_random(char *out, size_t outlen, unsigned attempt);

#endif
