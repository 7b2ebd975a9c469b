// The JSON shapes of /console/api (see the console contract).

export interface ModelInfo {
  id: string;
  name: string;
  description: string;
  kind: "chat" | "embedding";
  context_window: number;
  max_input_tokens: number;
  max_output_tokens: number;
  shapes: string[];
}

export interface ServerInfo {
  server: string;
  version: string;
  access_requests_open: boolean;
  models: ModelInfo[];
}

export type AccessStatus = "pending" | "approved" | "issued" | "rejected";

export interface AccessRequestCreated {
  status: "pending";
  token: string;
  status_path: string;
}

export interface AccessStatusReply {
  status: AccessStatus;
  name: string;
  created_at: number;
  decided_at: number | null;
}

/** Models a key may use: null (or absent) means all. */
export type ModelList = string[] | string | null;

export interface Limits {
  rpm: number | null;
  tpm: number | null;
  concurrency: number | null;
  models: ModelList;
  expires_at: number | null;
}

export interface RevealedKey extends Limits {
  key: string;
  key_id: string;
  prefix: string;
}

export interface AccessRequest {
  id: string;
  name: string;
  contact: string;
  purpose: string;
  status: AccessStatus;
  created_at: number;
  decided_at: number | null;
  key_id: string | null;
  limits: Limits | null;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  rpm: number | null;
  tpm: number | null;
  concurrency: number | null;
  models: ModelList;
  status: "active" | "revoked" | "expired";
  requests: number;
  total_tokens: number;
}

export interface UsagePoint {
  t: number;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
}

export interface UsageTotals {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface UsageByKey extends UsageTotals {
  key_id: string;
  name: string;
}

export interface UsageByModel extends UsageTotals {
  model: string;
}

export type Bucket = "hour" | "day";

export interface UsageReport {
  bucket: Bucket;
  since: number;
  until: number;
  series: UsagePoint[];
  by_key: UsageByKey[];
  by_model: UsageByModel[];
  totals: UsageTotals;
}

export interface MyUsage extends Omit<UsageReport, "by_key"> {
  key: {
    id: string;
    name: string;
    prefix: string;
    rpm: number | null;
    tpm: number | null;
    concurrency: number | null;
    models: ModelList;
    expires_at: number | null;
  };
}

export interface LiveModel {
  id: string;
  status: string;
  sequences: number;
  busy: number;
  waiting: number;
  tokens_per_second: number;
  requests_last_minute: number;
}

export interface LiveError {
  time: number;
  status: number;
  method: string;
  route: string;
  model: string | null;
  key_id: string | null;
  request_id: string | null;
}

export interface LiveView {
  uptime_s: number;
  rss_mb: number;
  models: LiveModel[];
  recent_errors: LiveError[];
}

export interface Session {
  signed_in: boolean;
  admin_configured: boolean;
}

export interface OpenAIModel {
  id: string;
  name?: string;
  available_shapes?: string[];
  default_shape?: string | null;
}
