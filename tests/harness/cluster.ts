/** Integration tests use the same local cluster as `deno task up`, in a temp dir. */
export {
  type ClusterOptions,
  LocalCluster as TestCluster,
  type NodeProcess,
} from "../../server/local_cluster.ts";
