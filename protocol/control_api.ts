/**
 * The control plane's contract: every control op with its request and result schema. The
 * NATS subjects (`cairn.v1.ctl.<op>`), the HTTP API and the CLI all go through this one
 * table, so a body is defined, checked and worded in one place.
 */
import { z } from "zod";
import { type ControlOp, controlOps } from "./subjects.ts";
import {
  clusterStatusSchema,
  createVolumeRequestSchema,
  deletedVolumeSchema,
  drainResultSchema,
  emptyRequestSchema,
  moveVolumeRequestSchema,
  nodeIdRequestSchema,
  nodeInfoSchema,
  okToStopSchema,
  type VerifyProgress,
  type VerifyReport,
  volumeInfoSchema,
  volumeNameRequestSchema,
} from "./schemas.ts";

export const controlApi = {
  "volume.create": { request: createVolumeRequestSchema, result: volumeInfoSchema },
  "volume.list": { request: emptyRequestSchema, result: z.array(volumeInfoSchema) },
  "volume.info": { request: volumeNameRequestSchema, result: volumeInfoSchema },
  "volume.delete": { request: volumeNameRequestSchema, result: deletedVolumeSchema },
  "volume.move": { request: moveVolumeRequestSchema, result: volumeInfoSchema },
  "node.list": { request: emptyRequestSchema, result: z.array(nodeInfoSchema) },
  "node.drain": { request: nodeIdRequestSchema, result: drainResultSchema },
  "node.undrain": { request: nodeIdRequestSchema, result: nodeInfoSchema },
  "node.ok-to-stop": { request: nodeIdRequestSchema, result: okToStopSchema },
  "cluster.status": { request: emptyRequestSchema, result: clusterStatusSchema },
} as const satisfies { [O in ControlOp]: { request: z.ZodType; result: z.ZodType } };

export type ControlRequest<O extends ControlOp> = z.infer<(typeof controlApi)[O]["request"]>;
export type ControlResult<O extends ControlOp> = z.infer<(typeof controlApi)[O]["result"]>;

/** One handler per op, each given a request already checked against its schema. */
export type ControlHandlers = {
  [O in ControlOp]: (request: ControlRequest<O>) => Promise<ControlResult<O>>;
};

/**
 * What the adapters call: the node's ControlService in-process, or a client over NATS.
 * `verifyVolume` is the one long operation: it scrubs every replica, so it runs where it
 * is asked (the CLI, or the node answering HTTP) rather than within one control request.
 */
export interface ControlApi {
  call<O extends ControlOp>(op: O, request: ControlRequest<O>): Promise<ControlResult<O>>;
  verifyVolume(name: string, onProgress?: (p: VerifyProgress) => void): Promise<VerifyReport>;
}

export function isControlOp(op: string): op is ControlOp {
  return (controlOps as readonly string[]).includes(op);
}
