/* Random tunnel names (names.h): an adjective and a noun from two fixed word lists. */
#include "names.h"
#include "net.h"

#include <stdint.h>
#include <stdio.h>

static const char *const adjectives[] = {
	"able",	   "agile",   "amber",	 "ancient", "arctic",  "azure",	  "bold",    "brave",
	"breezy",  "bright",  "brisk",	 "calm",    "careful", "cheery",  "chilly",  "clever",
	"cloudy",  "cosmic",  "cozy",	 "crafty",  "crimson", "crisp",	  "curious", "daring",
	"dashing", "dawn",    "deep",	 "dizzy",   "dreamy",  "dusty",	  "eager",   "early",
	"electric", "elder",  "emerald", "epic",    "fancy",   "fast",	  "fearless", "fiery",
	"fluffy",  "flying",  "foggy",	 "frosty",  "fuzzy",   "gentle",  "giant",   "gilded",
	"glad",	   "glowing", "golden",	 "grand",   "happy",   "hardy",   "hidden",  "hollow",
	"humble",  "icy",     "jolly",	 "keen",    "kind",    "lazy",	  "lively",  "lone",
	"lucky",   "lunar",   "mellow",	 "merry",   "mighty",  "misty",	  "mossy",   "nimble",
	"noble",   "odd",     "olive",	 "polar",   "proud",   "quick",	  "quiet",   "rapid",
	"rare",	   "ready",   "red",	 "restless", "rocky",  "rosy",	  "royal",   "rusty",
	"sandy",   "shady",   "shiny",	 "silent",  "silver",  "sleepy",  "slow",    "smooth",
	"snowy",   "solar",   "sparkly", "speedy",  "spicy",   "spooky",  "stable",  "steady",
	"stony",   "stormy",  "sturdy",	 "sunny",   "swift",   "tall",	  "tame",    "tidy",
	"tiny",	   "twilight", "velvet", "vivid",   "wandering", "warm",  "wild",    "windy",
	"wise",	   "witty",   "woolly",	 "young",   "zany",    "zesty",	  "amused",  "brassy",
};

static const char *const nouns[] = {
	"allay",   "anvil",   "armadillo", "axolotl", "bamboo",  "barrel",  "beacon",  "bee",
	"biome",   "blaze",   "boat",	 "bookshelf", "breeze", "brick",   "bucket",  "cactus",
	"camel",   "campfire", "candle", "cat",     "cauldron", "cave",	  "chest",   "chicken",
	"cod",	   "compass", "copper",	 "coral",   "cow",     "crafter", "creeper", "crystal",
	"diamond", "dolphin", "donkey",	 "dragon",  "dune",    "elytra",  "ember",   "emerald",
	"enderman", "fern",   "ferret",	 "firefly", "fox",     "frog",	  "furnace", "geode",
	"ghast",   "glacier", "goat",	 "golem",   "grove",   "guardian", "hoglin", "hopper",
	"horse",   "iceberg", "igloo",	 "jukebox", "kelp",    "lantern", "lava",    "lectern",
	"llama",   "lodestone", "magma", "meadow",  "minecart", "mooshroom", "moss", "mule",
	"nautilus", "nether", "obsidian", "ocelot", "otter",   "panda",	  "parrot",  "peak",
	"phantom", "pickaxe", "pig",	 "piglin",  "pillager", "piston", "pumpkin", "quartz",
	"rabbit",  "raft",    "ravine",	 "redstone", "river",  "salmon",  "sapling", "scute",
	"sheep",   "shulker", "skeleton", "slime",  "sniffer", "spider",  "spruce",  "squid",
	"strider", "tadpole", "torch",	 "trident", "turtle",  "valley",  "vex",     "villager",
	"vine",	   "warden",  "wolf",	 "zombie",  "acacia",  "basalt",  "birch",   "blossom",
	"cherry",  "cliff",   "crimson", "dripleaf", "lily",   "mangrove", "prism",  "sculk",
};

#define NADJ (sizeof(adjectives) / sizeof(adjectives[0]))
#define NNOUN (sizeof(nouns) / sizeof(nouns[0]))

void names_random(char *out, size_t outlen, unsigned attempt)
{
	uint64_t r = rand_u64();
	const char *a = adjectives[r % NADJ];
	const char *n = nouns[(r / NADJ) % NNOUN];
	if (attempt >= 4)
		snprintf(out, outlen, "%s-%s-%u", a, n, (unsigned)((r >> 32) % 90 + 10));
	else
		snprintf(out, outlen, "%s-%s", a, n);
}
