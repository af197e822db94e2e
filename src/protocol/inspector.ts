/** The Inspector view in the side bar: the model, the provider in use and the last analysis; buttons run commands. */
import type { AdapterInfo, ModelInfo, ParityReport, ProviderAttempt } from './results';
import type { HostMessage, WebviewMessage } from './requests';


export interface InspectorState {
  status: 'idle' | 'loading' | 'ready' | 'error' | 'running';
  modelDir?: string;
  model?: ModelInfo;
  provider?: string;
  /** The WebGPU adapter in use (webgpu only). */
  adapter?: AdapterInfo;
  attempts?: ProviderAttempt[];
  loadMs?: number;
  /** The background parity check of the loaded model against the float64 reference. */
  parity?: { status: 'running' } | { status: 'done'; report: ParityReport } | { status: 'failed'; error: string };
  error?: string;
  /**
   * The model's chat template (the file it is read from; absent: none, or `error` when it cannot be read) and whether
   * residual.chat wraps selections in it.
   */
  chat?: { on: boolean; template?: string; error?: string };
  last?: {
    preview: string;
    file?: string;
    tokens: number;
    top: { text: string; prob: number }[];
    ms: number;
    truncated?: string;
    /** How many of the tokens the chat template added (the analysis was in chat form). */
    chatAdded?: number;
  };
}

export type InspectorEvent = { type: 'inspector/state'; state: InspectorState };

export type InspectorRequests = {
  /** Runs one of the extension's commands (only the ones listed: the webview cannot run arbitrary commands). */
  'command/run': { params: { command: InspectorCommand }; result: void };
};

export type ToInspector = HostMessage<InspectorEvent>;
export type FromInspector = WebviewMessage<InspectorRequests, { type: 'ready' }>;

export const INSPECTOR_STATE_VERSION = 1;

export type InspectorCommand =
  | 'residual.analyzeSelection'
  | 'residual.traceCircuit'
  | 'residual.selectModel'
  | 'residual.showActivations'
  | 'residual.openSteering'
  | 'residual.showLog'
  | 'residual.toggleChat';
export const INSPECTOR_COMMANDS: readonly InspectorCommand[] = [
  'residual.analyzeSelection',
  'residual.traceCircuit',
  'residual.selectModel',
  'residual.showActivations',
  'residual.openSteering',
  'residual.showLog',
  'residual.toggleChat',
];
