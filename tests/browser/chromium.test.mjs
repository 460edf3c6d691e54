// The builder page's scenarios (lib/scenarios.mjs) in Debian's headless
// Chromium, driven by playwright-core. KILN_CHROMIUM names another binary.
import { builderSuite } from './lib/scenarios.mjs';
import { launchChromium } from './lib/ui.mjs';

builderSuite('Chromium', () => launchChromium());
