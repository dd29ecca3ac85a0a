/** Running Cairn: a node, a local nats-server, a local cluster. */
export { CairnNode, type NodeOptions, stableNodeId } from "./node.ts";
export { freePort, type LocalNats, startNatsServer } from "./nats_server.ts";
export { type ClusterOptions, LocalCluster } from "./local_cluster.ts";
