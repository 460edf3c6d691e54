// The builder page's scenarios (lib/scenarios.mjs) in Debian's headless
// Firefox ESR, driven by puppeteer-core over WebDriver BiDi (playwright-core's
// Firefox needs a patched build of its own). KILN_FIREFOX names another binary.
import { builderSuite } from './lib/scenarios.mjs';
import { launchFirefox } from './lib/ui.mjs';

builderSuite('Firefox', () => launchFirefox());
