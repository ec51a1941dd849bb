/**
 * One websocket per JupyterLab page to `<base_url>idds/api/v1/stream`,
 * subscribed to all of the user's runs; reconnects with exponential backoff
 * and jitter. Events are hints: after a reconnect `reconnected` fires so that
 * views re-read the store (events sent while disconnected are lost).
 */
import { ISignal, Signal } from '@lumino/signaling';

import { IddsApi } from './api';
import { backoffDelay } from './coalesce';

export interface IStreamEvent {
  type: 'job.result' | 'work.terminal' | 'workflow.terminal' | 'workflow.dirty' | string;
  key: string;
  workflow_id: number;
  [k: string]: unknown;
}

export type StreamState = 'connecting' | 'open' | 'closed';

export class LiveStream {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;
  private _state: StreamState = 'closed';
  private _event = new Signal<this, IStreamEvent>(this);
  private _stateChanged = new Signal<this, StreamState>(this);
  private _reconnected = new Signal<this, void>(this);
  private everOpen = false;

  constructor(
    private readonly api: IddsApi,
    private readonly maxDelay = 30000
  ) {}

  get event(): ISignal<this, IStreamEvent> {
    return this._event;
  }
  get stateChanged(): ISignal<this, StreamState> {
    return this._stateChanged;
  }
  /** fired on every open after the first: whatever happened meanwhile was missed */
  get reconnected(): ISignal<this, void> {
    return this._reconnected;
  }
  get state(): StreamState {
    return this._state;
  }

  private setState(s: StreamState): void {
    if (s !== this._state) {
      this._state = s;
      this._stateChanged.emit(s);
    }
  }

  connect(): void {
    if (this.disposed || this.ws) {
      return;
    }
    this.setState('connecting');
    let ws: WebSocket;
    try {
      const Ctor = (this.api.settings.WebSocket as typeof WebSocket | undefined) || WebSocket;
      ws = new Ctor(this.api.streamUrl());
    } catch {
      this.schedule();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ subscribe: '*' }));
    };
    ws.onmessage = (msg: MessageEvent) => {
      let data: IStreamEvent;
      try {
        data = JSON.parse(String(msg.data));
      } catch {
        return;
      }
      if (data.type === 'subscribed') {
        this.attempt = 0;
        this.setState('open');
        if (this.everOpen) {
          this._reconnected.emit();
        }
        this.everOpen = true;
        return;
      }
      if (data.type === 'error') {
        console.warn('idds stream:', data);
        return;
      }
      if (data.workflow_id === undefined && data.key !== undefined) {
        data.workflow_id = Number(data.key);
      }
      this._event.emit(data);
    };
    ws.onclose = () => {
      if (this.ws === ws) {
        this.ws = null;
        this.setState('closed');
        this.schedule();
      }
    };
    ws.onerror = () => {
      // onclose follows
    };
  }

  private schedule(): void {
    if (this.disposed || this.timer) {
      return;
    }
    const delay = backoffDelay(this.attempt++, 1000, this.maxDelay);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /** Reconnect now (e.g. the user asked for a refresh while disconnected). */
  kick(): void {
    if (this._state === 'closed') {
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = null;
      }
      this.connect();
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer) {
      clearTimeout(this.timer);
    }
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    Signal.clearData(this);
  }
}
