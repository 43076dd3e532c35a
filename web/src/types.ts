// The JSON of oxvirtd's /v1 API, as crates/api/src defines it (field names and values are the
// wire's; only what the UI reads is declared).

export type Role = 'admin' | 'read-only';

/** `POST|GET /v1/session` (docs/remote.md). */
export interface Session {
  user: string;
  role: Role;
  csrf_token: string;
  expires: string;
}

/** `ApiError`: every 4xx/5xx body. */
export interface ApiErrorBody {
  code: string;
  message: string;
}

export type DomainState =
  | 'running'
  | 'paused'
  | 'shut off'
  | 'crashed'
  | 'in shutdown'
  | 'pmsuspended';

export interface DomainSummary {
  id: number | null;
  name: string;
  uuid: string;
  state: DomainState;
  autostart: boolean;
  managed_save: boolean;
}

export interface DomainInfo {
  id: number | null;
  name: string;
  uuid: string;
  os_type: string;
  state: DomainState;
  state_reason: string;
  vcpus: number;
  max_memory_kib: number;
  used_memory_kib: number;
  cpu_time_ns: number;
  persistent: boolean;
  autostart: boolean;
  managed_save: boolean;
  engine: string;
  accel: string;
  warnings: string[];
}

export interface DomainDisk {
  disk_type: string;
  device: string;
  target: string;
  source: string | null;
}

export interface DomainInterface {
  target: string | null;
  interface_type: string;
  source: string | null;
  model: string | null;
  mac: string;
}

export interface SnapshotSummary {
  name: string;
  parent: string | null;
  creation_time: number;
  state: string;
  location: string;
  current: boolean;
}

export interface NodeInfo {
  arch: string;
  cpus: number;
  mhz: number;
  cells: number;
  sockets: number;
  cores: number;
  threads: number;
  memory_kib: number;
}

export interface NodeValues {
  values: { name: string; value: number }[];
}

export interface PoolInfo {
  name: string;
  uuid: string;
  pool_type: string;
  active: boolean;
  persistent: boolean;
  autostart: boolean;
  target: string;
  capacity: number | null;
  allocation: number | null;
  available: number | null;
}

export interface VolumeInfo {
  name: string;
  pool: string;
  path: string;
  volume_type: string;
  format: string;
  capacity: number;
  allocation: number;
}

export interface NetworkInfo {
  name: string;
  uuid: string;
  active: boolean;
  persistent: boolean;
  autostart: boolean;
  bridge: string | null;
}

export interface DomainsStats {
  domains: { name: string; fields: { name: string; value: string }[] }[];
}

/** One `data:` of `GET /v1/events` (oxvirt_api::Event). */
export interface StreamEvent {
  domain: string;
  uuid: string;
  kind: 'lifecycle' | 'monitor';
  event: string;
  detail?: string;
}

/** The lifecycle actions: `POST /v1/domains/{id}/{action}`. */
export type Action = 'start' | 'shutdown' | 'destroy' | 'reboot' | 'suspend' | 'resume';
