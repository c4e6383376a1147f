// preact + htm: tagged templates, no build step. Values are escaped text, never parsed as HTML.
import { h, render } from './vendor/preact.mjs';
import htm from './vendor/htm.mjs';

export const html = htm.bind(h);
export { render };
export { useEffect, useMemo, useRef, useState } from './vendor/hooks.mjs';
