/** What every view shares: the API, the one live stream, the user's settings. */
import { ISignal, Signal } from '@lumino/signaling';

import { IddsApi } from './api';
import type { LayoutEngine } from './layout';
import { LiveStream } from './stream';
import type { Direction } from './studies';

export interface IIddsSettings {
  /** ms: least time between two refreshes of one view (events are coalesced) */
  refreshInterval: number;
  /** s: fallback polling while runs are active or the stream is down */
  pollInterval: number;
  /** runs listed per page in the sidebar */
  pageSize: number;
  /** jobs per page in the jobs table */
  jobsPageSize: number;
  /** lines of a job's log shown */
  logTailLines: number;
  hpoDirection: Direction;
  layoutDirection: 'TB' | 'LR';
  layoutEngine: LayoutEngine;
  /** auto layout: dagre up to this many nodes + edges, the fast layered layout above */
  dagreMaxSize: number;
}

export const DEFAULT_SETTINGS: IIddsSettings = {
  refreshInterval: 1000,
  pollInterval: 15,
  pageSize: 50,
  jobsPageSize: 100,
  logTailLines: 200,
  hpoDirection: 'minimize',
  layoutDirection: 'TB',
  layoutEngine: 'auto',
  dagreMaxSize: 400
};

export class IddsContext {
  settings: IIddsSettings = { ...DEFAULT_SETTINGS };
  private _settingsChanged = new Signal<this, IIddsSettings>(this);

  constructor(
    readonly api: IddsApi,
    readonly stream: LiveStream
  ) {}

  get settingsChanged(): ISignal<this, IIddsSettings> {
    return this._settingsChanged;
  }

  updateSettings(s: Partial<IIddsSettings>): void {
    this.settings = { ...this.settings, ...s };
    this._settingsChanged.emit(this.settings);
  }
}
