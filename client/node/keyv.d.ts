export { KeyvSidecar, KeyvSidecar as default, KeyvSidecarOptions } from './index.js';
