// Three relays in separate network namespaces sharing a real 6-node Redis Cluster, with a
// primary failover in the middle.
//   node --test --test-concurrency=1 tests/cluster/relays-cluster.test.mjs     (root)
import { relaysSuite } from './relays.suite.mjs'
relaysSuite({ redisMode: 'cluster', id: 12 })
