import { LabIcon } from '@jupyterlab/ui-components';

/** A small DAG: three nodes and their edges (themed through jp-icon3). */
const WORKFLOW_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="9" y="2" width="6" height="5" rx="1"/>
    <rect x="2" y="16" width="6" height="5" rx="1"/>
    <rect x="16" y="16" width="6" height="5" rx="1"/>
    <path d="M11.3 7h1.4v3.3h5.6c.7 0 1.2.5 1.2 1.2V16h-1.4v-4.3h-5.4V16h-1.4v-4.3H6.1V16H4.7v-4.5c0-.7.5-1.2 1.2-1.2h5.4z"/>
  </g>
</svg>`;

export const workflowIcon = new LabIcon({ name: 'idds-jupyter:workflow', svgstr: WORKFLOW_SVG });
