/**
 * idds-jupyter's JupyterLab extension: the "Workflows" sidebar, run views
 * (DAG, jobs, logs), HPO and active-learning views, live over the server
 * extension's websocket.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { IddsApi } from './api';
import { DEFAULT_SETTINGS, IIddsSettings, IddsContext } from './context';
import { workflowIcon } from './icons';
import { MonitorView } from './monitor';
import { addNotebookCommands } from './notebookexport';
import { RunView } from './runview';
import { RunsModel, RunsPanel } from './sidebar';
import { StagingView } from './staging';
import { LiveStream } from './stream';
import { StudyView } from './studyview';

const PLUGIN_ID = 'idds-jupyter:plugin';

export namespace CommandIDs {
  export const showRuns = 'idds:show-workflows';
  export const refresh = 'idds:refresh-workflows';
  export const openRun = 'idds:open-run';
  export const openHpo = 'idds:open-hpo';
  export const openAl = 'idds:open-active-learning';
  export const openMonitor = 'idds:open-monitor';
  export const openStaging = 'idds:open-staging';
}

async function askId(title: string): Promise<number | null> {
  const r = await InputDialog.getNumber({ title, value: undefined as unknown as number });
  return r.button.accept && r.value !== null && Number.isFinite(r.value) ? Math.floor(r.value) : null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Live workflow runs, DAG, HPO and active-learning views of idds-jupyter',
  autoStart: true,
  requires: [],
  optional: [ICommandPalette, ISettingRegistry, ILayoutRestorer, ILauncher],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null,
    launcher: ILauncher | null
  ) => {
    const api = new IddsApi();
    const stream = new LiveStream(api);
    const ctx = new IddsContext(api, stream);
    const runs = new RunsModel(ctx);
    const openRun = (id: number): void => void app.commands.execute(CommandIDs.openRun, { id });
    const panel = new RunsPanel(runs, openRun);
    app.shell.add(panel, 'left', { rank: 650 });
    stream.connect();

    // One tracker per kind of view: the layout restorer re-opens each with its command.
    const tracker = new WidgetTracker<MainAreaWidget>({ namespace: 'idds-jupyter' });
    const studies = {
      hpo: new WidgetTracker<MainAreaWidget>({ namespace: 'idds-jupyter-hpo' }),
      al: new WidgetTracker<MainAreaWidget>({ namespace: 'idds-jupyter-al' })
    };
    const monitors = new WidgetTracker<MainAreaWidget>({ namespace: 'idds-jupyter-monitor' });
    const stagings = new WidgetTracker<MainAreaWidget>({ namespace: 'idds-jupyter-staging' });
    const open = (key: string, make: () => MainAreaWidget, into = tracker): MainAreaWidget => {
      let w = into.find(x => x.id === key);
      if (!w) {
        w = make();
        w.id = key;
        void into.add(w);
        app.shell.add(w, 'main');
      }
      app.shell.activateById(w.id);
      return w;
    };
    const openStudy = (kind: 'hpo' | 'al', id: number): void =>
      void app.commands.execute(kind === 'hpo' ? CommandIDs.openHpo : CommandIDs.openAl, { id });

    app.commands.addCommand(CommandIDs.showRuns, {
      label: args => (args.isLauncher ? 'Workflows' : 'Show Workflows'),
      caption: 'Show the runs of iDDS workflows',
      icon: workflowIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Workflows',
      execute: () => {
        stream.kick();
        runs.refresh();
      }
    });
    app.commands.addCommand(CommandIDs.openRun, {
      label: args => (args.id !== undefined ? `Open Run #${args.id}` : 'Open Workflow Run…'),
      caption: 'The DAG, jobs and logs of a run',
      icon: workflowIcon,
      execute: async args => {
        const id = args.id !== undefined ? Number(args.id) : await askId('Open run: workflow id');
        if (id === null) {
          return;
        }
        return open(`idds-run-${id}`, () => {
          const w = new MainAreaWidget({ content: new RunView(ctx, id, openStudy) });
          w.title.label = `Run #${id}`;
          w.title.icon = workflowIcon;
          w.title.closable = true;
          w.addClass('idds-main');
          return w;
        });
      }
    });
    const studyCommand = (cmd: string, kind: 'hpo' | 'al', label: string): void => {
      app.commands.addCommand(cmd, {
        label: args => (args.id !== undefined ? `${label} of Run #${args.id}` : `Open ${label}…`),
        icon: workflowIcon,
        execute: async args => {
          const id = args.id !== undefined ? Number(args.id) : await askId(`${label}: workflow id`);
          if (id === null) {
            return;
          }
          return open(
            `idds-${kind}-${id}`,
            () => {
              const w = new MainAreaWidget({ content: new StudyView(ctx, id, kind) });
              w.title.label = `${kind === 'hpo' ? 'HPO' : 'AL'} #${id}`;
              w.title.icon = workflowIcon;
              w.title.closable = true;
              w.addClass('idds-main');
              return w;
            },
            studies[kind]
          );
        }
      });
    };
    studyCommand(CommandIDs.openHpo, 'hpo', 'HPO View');
    studyCommand(CommandIDs.openAl, 'al', 'Active-Learning View');
    app.commands.addCommand(CommandIDs.openMonitor, {
      label: args => (args.isLauncher ? 'iDDS Monitor' : 'Open Monitor'),
      caption: 'Throughput, failures and queue depth over the last hours',
      icon: workflowIcon,
      execute: () =>
        open(
          'idds-monitor',
          () => {
            const w = new MainAreaWidget({ content: new MonitorView(ctx) });
            w.title.label = 'Monitor';
            w.title.icon = workflowIcon;
            w.title.closable = true;
            w.addClass('idds-main');
            return w;
          },
          monitors
        )
    });

    app.commands.addCommand(CommandIDs.openStaging, {
      label: args => (args.dataset ? `Staging of ${args.dataset}` : 'Open Dataset Staging…'),
      caption: 'Per-file staging state of a dataset (queued, staging, available, stuck)',
      icon: workflowIcon,
      execute: async args => {
        let dataset = args.dataset ? String(args.dataset) : '';
        if (!dataset) {
          const r = await InputDialog.getText({ title: 'Dataset (e.g. rucio://SCOPE:NAME)' });
          dataset = r.button.accept && r.value ? r.value.trim() : '';
        }
        if (!dataset) {
          return;
        }
        return open(
          `idds-staging-${dataset}`,
          () => {
            const w = new MainAreaWidget({ content: new StagingView(ctx, dataset) });
            w.title.label = `Staging ${dataset}`;
            w.title.icon = workflowIcon;
            w.title.closable = true;
            w.addClass('idds-main');
            return w;
          },
          stagings
        );
      }
    });

    const notebookCommands = addNotebookCommands(app, api, openRun);

    if (palette) {
      const category = 'iDDS Workflows';
      for (const command of [
        ...notebookCommands,
        CommandIDs.showRuns,
        CommandIDs.refresh,
        CommandIDs.openRun,
        CommandIDs.openHpo,
        CommandIDs.openAl,
        CommandIDs.openMonitor,
        CommandIDs.openStaging
      ]) {
        palette.addItem({ command, category });
      }
    }
    if (launcher) {
      launcher.add({ command: CommandIDs.showRuns, category: 'Other', rank: 1, args: { isLauncher: true } });
      launcher.add({ command: CommandIDs.openMonitor, category: 'Other', rank: 2, args: { isLauncher: true } });
    }
    if (restorer) {
      restorer.add(panel, 'idds-workflows');
      const idOf = (w: MainAreaWidget): { id: number } => ({ id: Number(w.id.split('-').pop()) });
      void restorer.restore(tracker, { command: CommandIDs.openRun, args: idOf, name: w => w.id });
      void restorer.restore(studies.hpo, { command: CommandIDs.openHpo, args: idOf, name: w => w.id });
      void restorer.restore(studies.al, { command: CommandIDs.openAl, args: idOf, name: w => w.id });
      void restorer.restore(monitors, { command: CommandIDs.openMonitor, name: w => w.id });
      void restorer.restore(stagings, {
        command: CommandIDs.openStaging,
        args: w => ({ dataset: (w.content as StagingView).datasetName }),
        name: w => w.id
      });
    }
    if (registry) {
      const apply = (s: ISettingRegistry.ISettings): void => {
        const c = s.composite as Partial<IIddsSettings>;
        const out: Partial<IIddsSettings> = {};
        for (const k of Object.keys(DEFAULT_SETTINGS) as Array<keyof IIddsSettings>) {
          if (c[k] !== undefined) {
            (out as Record<string, unknown>)[k] = c[k];
          }
        }
        ctx.updateSettings(out);
      };
      registry
        .load(PLUGIN_ID)
        .then(s => {
          apply(s);
          s.changed.connect(apply);
        })
        .catch(err => console.warn('idds-jupyter: settings not loaded', err));
    }
  }
};

export default plugin;
