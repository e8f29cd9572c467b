/**
 * A fake Event Hubs namespace with one hub, speaking AMQP 1.0 over TLS on loopback, built on rhea
 * (the AMQP library @azure/event-hubs itself uses). The real EventHubProducerClient talks to it
 * with only `customEndpointAddress` changed: SASL ANONYMOUS, the claims-based-security (CBS)
 * `put-token` handshake with the Entra token of a TokenCredential, the sender link to the hub with
 * the hub's maximum message size, and batched transfers (format 0x80013700) whose data sections
 * are the events. What it does not implement: `$management` requests (the producer never needs
 * them to send with a partition key), receivers, partitions (it records the partition key the
 * service would hash), idempotent publishing, and token expiry.
 *
 * Faults are the service's own answers: a transfer rejected with an AMQP error (throttling is
 * `com.microsoft:server-busy`), a sender link refused on attach (the identity lacks the Data
 * Sender role: `amqp:unauthorized-access`; a hub that does not exist: `amqp:not-found`), and a
 * transfer held unsettled (the service took it, its acknowledgement never arrives).
 *
 * The certificate is self-signed and the SDK has no option to trust a CA, so a test using this
 * fake sets NODE_TLS_REJECT_UNAUTHORIZED=0 for its own process (see `trustFakeCertificates`).
 */
import type { Server } from "node:net";
import { create_container, message as amqp, type AmqpError, type Connection, type Delivery, type EventContext, type Message, type Sender } from "rhea";
import { registerSecrets } from "../harness/secrecy";
import { createTestCertificate } from "./tls";

/** Event Hubs Standard: 1 MB per publication (the SDK reads it from the link's attach). */
export const STANDARD_MAX_MESSAGE_SIZE = 1024 * 1024;
/** Message format of a batch: one transfer whose data sections are encoded messages. */
const BATCH_FORMAT = 0x80013700;
const CBS = "$cbs";

export interface ReceivedEvent {
  partitionKey: string | undefined;
  body: Buffer;
  contentType: string | undefined;
  properties: Record<string, unknown>;
}

export interface FakeEventHubsOptions {
  /** The namespace the client is configured with: CBS audiences are `sb://{namespace}/{entity}`. */
  namespace: string;
  hubName: string;
  /** The only bearer token the fake accepts in `put-token`. */
  acceptedToken: string;
  maxMessageSize?: number;
}

interface HeldTransfer {
  delivery: Delivery;
  events: ReceivedEvent[];
}

export class FakeEventHubs {
  /** Every event the hub stored, in arrival order (a batch taken twice is here twice). */
  readonly events: ReceivedEvent[] = [];
  /** CBS requests seen: audience and token type, never the token. */
  readonly tokenRequests: Array<{ audience: string; type: string; accepted: boolean }> = [];
  /** Batch transfers the hub took (stored), and those refused by an injected fault. */
  transfers = 0;
  rejectedTransfers = 0;
  /** Largest transfer seen, in bytes. */
  largestTransfer = 0;

  private readonly container = create_container({ id: "fake-event-hubs" });
  private readonly connections = new Set<Connection>();
  private readonly held: HeldTransfer[] = [];
  private server: Server | undefined;
  private rejectNext: { count: number; error: AmqpError } = { count: 0, error: { condition: "" } };
  private refuseLinks: AmqpError | undefined;
  private stall: "none" | "stored" = "none";

  constructor(private readonly options: FakeEventHubsOptions) {
    registerSecrets(() => [this.options.acceptedToken], "fake Event Hubs accepted token");
    this.container.on("connection_open", (context: EventContext) => this.connections.add(context.connection));
    this.container.on("disconnected", (context: EventContext) => this.connections.delete(context.connection));
    this.container.on("sender_open", (context: EventContext) => this.senderOpened(context));
    this.container.on("receiver_open", (context: EventContext) => this.receiverOpened(context));
    this.container.on("message", (context: EventContext) => this.received(context));
    // A client that goes away mid-frame (an aborted test) is not the fake's failure.
    this.container.on("error", () => undefined);
  }

  get maxMessageSize(): number {
    return this.options.maxMessageSize ?? STANDARD_MAX_MESSAGE_SIZE;
  }

  /** What the client passes as `customEndpointAddress`. */
  get endpoint(): string {
    const address = this.server?.address();
    if (!address || typeof address === "string") throw new Error("FakeEventHubs is not listening");
    return `amqps://127.0.0.1:${address.port}`;
  }

  async start(): Promise<void> {
    const tls = await createTestCertificate();
    const server = this.container.listen({
      transport: "tls",
      host: "127.0.0.1",
      port: 0,
      key: tls.keyPem,
      cert: tls.certPem,
      // Settled by hand so faults can reject or hold a transfer; the attach advertises the limit.
      receiver_options: { autoaccept: false, max_message_size: this.maxMessageSize },
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("listening", resolve);
      server.once("error", reject);
    });
  }

  async stop(): Promise<void> {
    for (const connection of this.connections) connection.close();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The next `count` transfers to the hub are rejected with this AMQP error, nothing stored. */
  rejectTransfers(count: number, condition = "com.microsoft:server-busy", description = "The request was terminated because the entity is being throttled. Please wait 1 seconds and try again."): void {
    this.rejectNext = { count, error: { condition, description } };
  }

  /** Sender links to the hub are refused on attach with this error (undefined: accepted again). */
  refuseSenders(error: AmqpError | undefined): void {
    this.refuseLinks = error;
  }

  /** "stored": transfers are stored but never acknowledged, as when the answer is lost. */
  stallTransfers(mode: "none" | "stored"): void {
    this.stall = mode;
    if (mode === "none") for (const held of this.held.splice(0)) held.delivery.accept();
  }


  private senderOpened(context: EventContext): void {
    // The client's receiver on $cbs: answers to put-token go out on this link.
    const sender = context.sender;
    if (sender) sender.set_source({ address: sender.source?.address ?? "" });
  }

  private receiverOpened(context: EventContext): void {
    const receiver = context.receiver;
    if (!receiver) return;
    const address = receiver.target?.address;
    receiver.set_target({ address: address ?? "" });
    if (address === CBS) return;
    if (address !== this.options.hubName) {
      receiver.close({ condition: "amqp:not-found", description: `The messaging entity 'sb://${this.options.namespace}/${address ?? ""}' could not be found.` });
    } else if (this.refuseLinks) {
      receiver.close(this.refuseLinks);
    }
  }

  private received(context: EventContext): void {
    const { receiver, delivery } = context;
    if (!receiver || !delivery) return;
    if (receiver.target?.address === CBS) {
      this.putToken(context, context.message as Message);
      return;
    }
    const raw: unknown = context.message;
    if (!Buffer.isBuffer(raw) || delivery.format !== BATCH_FORMAT) {
      delivery.reject({ condition: "amqp:not-implemented", description: "The fake takes batches only" });
      return;
    }
    this.largestTransfer = Math.max(this.largestTransfer, raw.length);
    if (raw.length > this.maxMessageSize) {
      delivery.reject({ condition: "amqp:link:message-size-exceeded", description: "The message is larger than the link allows" });
      return;
    }
    if (this.rejectNext.count > 0) {
      this.rejectNext.count--;
      this.rejectedTransfers++;
      delivery.reject(this.rejectNext.error);
      return;
    }
    const events = eventsOf(decode(raw));
    this.transfers++;
    this.events.push(...events);
    if (this.stall === "stored") this.held.push({ delivery, events });
    else delivery.accept();
  }

  private putToken(context: EventContext, request: Message): void {
    context.delivery?.accept();
    const properties = request.application_properties ?? {};
    const audience = String(properties["name"] ?? "");
    const type = String(properties["type"] ?? "");
    // Like the service, a good token for any entity of the namespace is accepted here; whether
    // the entity exists is answered when the link attaches.
    const accepted =
      properties["operation"] === "put-token" && type === "jwt" && audience.startsWith(`sb://${this.options.namespace}/`) && request.body === this.options.acceptedToken;
    this.tokenRequests.push({ audience, type, accepted });
    const reply = context.connection.find_sender((sender: Sender) => sender.source?.address === CBS);
    reply?.send({
      body: undefined,
      to: request.reply_to,
      correlation_id: request.message_id,
      application_properties: accepted
        ? { "status-code": 202, "status-description": "Accepted" }
        : { "status-code": 401, "status-description": "InvalidSignature: The token is not valid for this audience." },
    });
  }
}

/** The parts of a decoded AMQP message the fake reads. */
interface DecodedMessage {
  body?: unknown;
  content_type?: string;
  message_annotations?: Record<string, unknown>;
  application_properties?: Record<string, unknown>;
}

function decode(buffer: Buffer): DecodedMessage {
  return amqp.decode(buffer) as unknown as DecodedMessage;
}

/** The events of a batch transfer: each data section is one encoded message. */
function eventsOf(batch: DecodedMessage): ReceivedEvent[] {
  const partitionKey = batch.message_annotations?.["x-opt-partition-key"];
  const body = batch.body as { multiple?: boolean; content: Buffer | Buffer[] };
  const sections = body.multiple ? (body.content as Buffer[]) : [body.content as Buffer];
  return sections.map((section) => {
    const event = decode(section);
    const content = (event.body as { content?: unknown }).content;
    return {
      partitionKey: typeof partitionKey === "string" ? partitionKey : undefined,
      body: Buffer.isBuffer(content) ? content : Buffer.from(String(event.body)),
      contentType: event.content_type,
      properties: { ...(event.application_properties ?? {}) },
    };
  });
}

/**
 * Lets this test process's TLS clients accept the fake's self-signed certificate (core-amqp has
 * no CA option). Returns the function that restores the setting. Only for a test file that runs
 * in its own process (vitest's forks pool with isolate).
 */
export function trustFakeCertificates(): () => void {
  const before = process.env["NODE_TLS_REJECT_UNAUTHORIZED"];
  process.env["NODE_TLS_REJECT_UNAUTHORIZED"] = "0";
  return () => {
    if (before === undefined) delete process.env["NODE_TLS_REJECT_UNAUTHORIZED"];
    else process.env["NODE_TLS_REJECT_UNAUTHORIZED"] = before;
  };
}
