/** The Transport port over a NATS connection (production). */
import type { NatsConnection } from "@nats-io/nats-core";
import {
  type MessageBody,
  type Transport,
  TransportError,
  type TransportMessage,
  type TransportSubscription,
} from "../actors/ports.ts";
import { RequestMux } from "./request_mux.ts";
import { requestFailure } from "./control.ts";

export class NatsTransport implements Transport {
  readonly mux: RequestMux;

  constructor(readonly nc: NatsConnection, mux?: RequestMux) {
    this.mux = mux ?? new RequestMux(nc);
  }

  /** Rejects with a TransportError (the port's contract) when nobody answered. */
  request(subject: string, data: MessageBody, timeoutMs: number): Promise<Uint8Array> {
    return this.mux.request(subject, data, timeoutMs).catch((err) => {
      const kind = requestFailure(err);
      throw kind === "other" ? err : new TransportError(kind, (err as Error).message);
    });
  }

  publish(subject: string, data: Uint8Array): void {
    this.nc.publish(subject, data);
  }

  subscribe(
    subject: string,
    handler: (msg: TransportMessage) => void,
    options: { queue?: string } = {},
  ): TransportSubscription {
    return this.nc.subscribe(subject, {
      queue: options.queue,
      // A subscription the server refused (permissions) calls back once with an error and no
      // message; the connection's status reports it (the node logs it), so it is dropped here.
      callback: (err, msg) =>
        err ? undefined : handler({
          subject: msg.subject,
          data: msg.data,
          respond: (data) => msg.respond(data),
          origin: msg.reply ? msg.reply.slice(0, msg.reply.lastIndexOf(".")) : undefined,
        }),
    });
  }

  /** The connected server's max_payload (from its INFO; undefined before the first). */
  maxPayloadBytes(): number | undefined {
    return this.nc.info?.max_payload;
  }

  async flush(): Promise<void> {
    await this.nc.flush();
  }

  close(): void {
    this.mux.close();
  }
}
