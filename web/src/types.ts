/** The shapes of the admin API's answers the dashboard reads (src/admin/api-*.ts). */

export type SeriesCounter = 'queued' | 'delivered' | 'deferred' | 'failed' | 'refused';

export interface SeriesColumns {
  bucketSeconds: number;
  time: number[];
  counts: Record<SeriesCounter, number[]>;
  queue: (number | null)[];
}

export type MessageState = 'active' | 'held' | 'deferred' | 'pending';

export interface QueueRecipient {
  address: string;
  status: 'pending' | 'delivered' | 'deferred' | 'failed';
  lastError?: string;
  nextAttemptAt?: number;
  attempts?: number;
  detail?: string;
}

export interface QueueEntry {
  qid: string;
  receivedAt: number;
  size: number;
  sender: string;
  held: boolean;
  state: MessageState;
  recipients: QueueRecipient[];
}

export interface QueuePage {
  total: number;
  items: QueueEntry[];
  nextCursor: string | null;
}

export interface DestinationStatus {
  domain: string;
  recipients: number;
  messages: number;
  held: number;
  oldestReceivedAt: number;
  nextAttemptAt: number | null;
  maxAttempts: number;
  reasons: { reason: string; recipients: number; example: string }[];
  outbound: { active: number; waiting: number; parked: number };
}

export interface RefusalReason {
  stage: string;
  code: number;
  enhanced: string;
  text: string;
  count: number;
  lastAt: number;
}

export interface StoryEvent {
  kind: 'queued' | 'delivery' | 'refusal';
  at: number;
  seq: number;
  sender?: string;
  recipients?: string[];
  recipient?: string;
  destination?: string;
  result?: string;
  detail?: string;
  reason?: string;
  size?: number;
  code?: number;
  enhanced?: string;
  text?: string;
  stage?: string;
  ip?: string;
  listener?: string;
}

export interface Story {
  qid: string;
  inQueue: boolean;
  message: (Omit<QueueEntry, 'state'> & { headers: string }) | null;
  events: StoryEvent[];
}
