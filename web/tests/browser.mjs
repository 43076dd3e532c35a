// The web UI's acceptance test (issue 17) in headless Chromium (Debian's /usr/bin/chromium) driven
// by playwright-core, against a real oxvirtd: crates/cli/tests/web_ui.rs starts the daemon, makes
// the users and the pool, then runs `node tests/browser.mjs` here with these variables:
//
//   OXVIRT_URL                         https://127.0.0.1:PORT
//   OXVIRT_ADMIN_USER / _PASSWORD      an admin
//   OXVIRT_VIEWER_USER / _PASSWORD     a read-only user
//   OXVIRT_POOL                        an active dir pool (the new guest's disk, the ISO upload)
//   OXVIRT_KERNEL / OXVIRT_INITRD      the test guest kit's kernel and initramfs
//   OXVIRT_KERNEL_VERSION              what `uname -r` prints in the kit guest
//   OXVIRT_BOOT_MARKER                 what the kit guest prints when booted
//   OXVIRT_GUEST                       the name of the guest to create
//   OXVIRT_ARTIFACTS                   a directory for screenshots when a step fails
//   CHROMIUM (optional)                the browser, /usr/bin/chromium by default
//
// Each step prints a line; a failure prints the step, the error and the page's console, saves a
// screenshot, and exits 1.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`browser test: ${name} is not set (crates/cli/tests/web_ui.rs sets it)`);
    process.exit(2);
  }
  return value;
};

const url = env('OXVIRT_URL');
const admin = { user: env('OXVIRT_ADMIN_USER'), password: env('OXVIRT_ADMIN_PASSWORD') };
const viewer = { user: env('OXVIRT_VIEWER_USER'), password: env('OXVIRT_VIEWER_PASSWORD') };
const pool = env('OXVIRT_POOL');
const guest = env('OXVIRT_GUEST');
const kernelVersion = env('OXVIRT_KERNEL_VERSION');
const bootMarker = env('OXVIRT_BOOT_MARKER');
const artifacts = env('OXVIRT_ARTIFACTS');

// Bounds of the waits: the guest boots under TCG on a loaded machine.
const BOOT_MS = 180_000;
const STEP_MS = 30_000;

const logs = [];
let step = 'launch';
const pages = [];

function say(line) {
  console.log(`browser test: ${line}`);
}

async function check(name, body) {
  step = name;
  const started = Date.now();
  await body();
  say(`ok: ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

function watch(page, label) {
  pages.push([label, page]);
  page.on('console', (m) => logs.push(`[${label} console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[${label} pageerror] ${e.message}`));
  page.on('requestfailed', (r) => logs.push(`[${label} requestfailed] ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  return page;
}

async function login(page, who) {
  await page.goto(url);
  await page.getByTestId('login-user').fill(who.user);
  await page.getByTestId('login-password').fill(who.password);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('session-user').filter({ hasText: who.user }).waitFor({ timeout: STEP_MS });
}

/** The text xterm shows (its DOM renderer's rows). */
async function terminalText(page) {
  return page.locator('.xterm-rows').innerText();
}

async function waitForTerminal(page, text, timeout) {
  await page.waitForFunction(
    (wanted) => document.querySelector('.xterm-rows')?.textContent?.includes(wanted),
    text,
    { timeout, polling: 250 },
  );
}

/**
 * Waits for a terminal row that is exactly `line` right below a row ending with `command`: a
 * command's answer (the kernel version alone would also match the boot log's "Linux version").
 */
async function waitForAnswer(page, command, line, timeout) {
  await page.waitForFunction(
    ([command, line]) => {
      const rows = [...document.querySelectorAll('.xterm-rows > div')].map((r) =>
        (r.textContent ?? '').replace(/\u00a0/g, ' ').trimEnd(),
      );
      return rows.some((row, i) => i > 0 && row === line && rows[i - 1].endsWith(command));
    },
    [command, line],
    { timeout, polling: 250 },
  );
}

/** Pixels of the VNC canvas's screenshot that differ from a black canvas of the same size. */
async function canvasDifference(page) {
  const canvas = page.getByTestId('vnc-screen').locator('canvas');
  const png = await canvas.screenshot();
  return page.evaluate(async (b64) => {
    const image = new Image();
    image.src = `data:image/png;base64,${b64}`;
    await image.decode();
    const draw = (paint) => {
      const c = document.createElement('canvas');
      c.width = image.width;
      c.height = image.height;
      const ctx = c.getContext('2d');
      paint(ctx);
      return ctx.getImageData(0, 0, c.width, c.height).data;
    };
    const shot = draw((ctx) => ctx.drawImage(image, 0, 0));
    const blank = draw((ctx) => {
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, image.width, image.height);
    });
    let differing = 0;
    for (let i = 0; i < shot.length; i += 4) {
      if (shot[i] !== blank[i] || shot[i + 1] !== blank[i + 1] || shot[i + 2] !== blank[i + 2]) differing++;
    }
    return { differing, width: image.width, height: image.height };
  }, png.toString('base64'));
}

/** The state cell of `name`'s row in the guest list. */
const rowState = (page, name) =>
  page.locator(`[data-testid="guest-row"][data-name="${name}"] [data-testid="guest-state"]`);

// Playwright gives the browser a fresh profile of its own (and removes it).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // As root, without a sandbox; and nothing that reaches for the internet (environment.md).
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

let failed = false;
try {
  const adminContext = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 1000 } });
  await adminContext.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
  const page = watch(await adminContext.newPage(), 'admin');

  await check('an admin logs in and sees the host overview', async () => {
    await login(page, admin);
    await page.getByTestId('host-cpu').getByText('CPUs').waitFor({ timeout: STEP_MS });
    await page.getByTestId('host-memory').getByText('Total').waitFor({ timeout: STEP_MS });
    await page.getByTestId('host-pools').getByText(pool).waitFor({ timeout: STEP_MS });
  });

  await check('the create-guest form defines a kit guest (direct kernel boot, a new volume, VNC)', async () => {
    await page.getByTestId('nav-create').click();
    await page.getByTestId('create-name').fill(guest);
    await page.getByTestId('create-vcpus').fill('1');
    await page.getByTestId('create-memory').fill('256');
    await page.getByTestId('create-virt-type').selectOption('qemu');
    await page.getByTestId('disk-new').check();
    await page.getByTestId('create-new-pool').selectOption(pool);
    await page.getByTestId('create-new-size').fill('1');
    await page.getByTestId('boot-kernel').check();
    await page.getByTestId('create-kernel').fill(env('OXVIRT_KERNEL'));
    await page.getByTestId('create-initrd').fill(env('OXVIRT_INITRD'));
    // The kernel prints on the VGA console too, so the graphical console shows it.
    await page.getByTestId('create-cmdline').fill('console=tty0 console=ttyS0 panic=-1');
    await page.getByTestId('create-network').selectOption('');
    await page.getByTestId('create-graphics').check();
    await page.getByTestId('create-submit').click();
    await page.waitForURL(`**/#/guests/${guest}`, { timeout: STEP_MS });
    await page.getByTestId('guest-state').filter({ hasText: 'shut off' }).waitFor({ timeout: STEP_MS });
    const disks = page.getByTestId('disk-list');
    await disks.getByText(`${guest}.qcow2`).waitFor({ timeout: STEP_MS });
  });

  // A second tab with the guest list, never reloaded: its states must follow the event stream.
  const list = watch(await adminContext.newPage(), 'list');
  await check('the guest list shows the new guest, shut off', async () => {
    await list.goto(`${url}/#/guests`);
    await rowState(list, guest).filter({ hasText: 'shut off' }).waitFor({ timeout: STEP_MS });
    await list.evaluate(() => {
      window.oxvirtNotReloaded = true;
    });
  });

  await check('the serial console of the shut-off guest waits for it to start', async () => {
    await page.getByTestId('tab-console').click();
    await page.getByTestId('console-status').filter({ hasText: 'connects when it starts' }).waitFor({ timeout: STEP_MS });
  });

  await check('start from the guest page; the console connects; the list follows without a reload', async () => {
    await page.getByTestId('action-start').click();
    await page.getByTestId('guest-state').filter({ hasText: 'running' }).waitFor({ timeout: BOOT_MS });
    await rowState(list, guest).filter({ hasText: 'running' }).waitFor({ timeout: STEP_MS });
    await page.getByTestId('console-status').filter({ hasText: /^connected$/ }).waitFor({ timeout: STEP_MS });
  });

  await check('the serial console shows the boot marker', async () => {
    await page.locator('.xterm').click();
    try {
      await waitForTerminal(page, bootMarker, BOOT_MS);
    } catch (e) {
      throw new Error(`no boot marker; the terminal shows:\n${await terminalText(page)}\n${e.message}`);
    }
  });

  await check('typing `uname -r` in the console shows the kernel version', async () => {
    await waitForTerminal(page, 'oxvirt-guest#', BOOT_MS);
    await page.keyboard.type('uname -r');
    await page.keyboard.press('Enter');
    try {
      await waitForAnswer(page, 'uname -r', kernelVersion, STEP_MS);
    } catch (e) {
      throw new Error(`no kernel version; the terminal shows:\n${await terminalText(page)}\n${e.message}`);
    }
  });

  await check('paste (Ctrl+Shift+V) types the clipboard into the guest; a selection copies (Ctrl+Shift+C)', async () => {
    await page.evaluate(() => navigator.clipboard.writeText('echo pasted-$((6*7))'));
    await page.keyboard.press('Control+Shift+V');
    // The page reads the clipboard asynchronously: Enter once the pasted line is there.
    await waitForTerminal(page, 'echo pasted-$((6*7))', STEP_MS);
    await page.keyboard.press('Enter');
    await waitForAnswer(page, 'echo pasted-$((6*7))', 'pasted-42', STEP_MS);
    // Double-click the answer's word in the terminal: xterm selects it; copy puts it on the clipboard.
    const row = page.locator('.xterm-rows > div').filter({ hasText: /^pasted-42\s*$/ }).last();
    const box = await row.boundingBox();
    if (!box) throw new Error('the answer line is not on the screen');
    await page.mouse.dblclick(box.x + 12, box.y + box.height / 2);
    await page.keyboard.press('Control+Shift+C');
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    if (copied.trim() !== 'pasted-42') throw new Error(`the clipboard holds ${JSON.stringify(copied)}`);
  });

  await check('the graphical console draws the guest screen (canvas differs from a blank one)', async () => {
    await page.getByTestId('tab-graphics').click();
    await page.getByTestId('vnc-status').filter({ hasText: 'connected' }).waitFor({ timeout: STEP_MS });
    const deadline = Date.now() + STEP_MS;
    let result = { differing: 0 };
    while (Date.now() < deadline) {
      result = await canvasDifference(page);
      if (result.differing > 0) break;
      await page.waitForTimeout(500);
    }
    if (!(result.width > 0 && result.differing > 0)) {
      throw new Error(`the VNC canvas stayed blank: ${JSON.stringify(result)}`);
    }
    say(`VNC canvas ${result.width}x${result.height}: ${result.differing} pixels differ from black`);
  });

  await check('shut down from the guest page; the list shows it shut off without a reload', async () => {
    await page.goto(`${url}/#/guests/${guest}`);
    await page.getByTestId('action-shutdown').click();
    await rowState(list, guest).filter({ hasText: 'shut off' }).waitFor({ timeout: BOOT_MS });
    const same = await list.evaluate(() => window.oxvirtNotReloaded === true);
    if (!same) throw new Error('the list page was reloaded');
  });

  await check('the storage page uploads an ISO with a progress bar', async () => {
    await page.getByTestId('nav-storage').click();
    await page.locator(`[data-testid="pool-row"][data-name="${pool}"] [data-testid="pool-open"]`).click();
    const bytes = Buffer.alloc(3 * 1024 * 1024, 0);
    bytes.write('CD001', 0x8001);
    for (let i = 0x9000; i < bytes.length; i += 4096) bytes.writeUInt32LE(i, i);
    await page.getByTestId('upload-file').setInputFiles({ name: 'web-test.iso', mimeType: 'application/x-iso9660-image', buffer: bytes });
    await page.getByTestId('upload-submit').click();
    await page.getByTestId('upload-status').filter({ hasText: 'uploaded' }).waitFor({ timeout: STEP_MS });
    const value = await page.getByTestId('upload-progress').evaluate((p) => p.value);
    if (value !== 1) throw new Error(`progress ends at ${value}`);
    await page.locator('[data-testid="volume-row"][data-name="web-test.iso"]').waitFor({ timeout: STEP_MS });
  });

  const viewerContext = await browser.newContext({ ignoreHTTPSErrors: true });
  const ro = watch(await viewerContext.newPage(), 'viewer');
  await check('a read-only user sees the guests but no action buttons', async () => {
    await login(ro, viewer);
    await ro.goto(`${url}/#/guests`);
    await rowState(ro, guest).waitFor({ timeout: STEP_MS });
    await ro.goto(`${url}/#/guests/${guest}`);
    await ro.getByTestId('guest-info').getByText('UUID').waitFor({ timeout: STEP_MS });
    // Each page once it has drawn what its buttons would be drawn with.
    const pages = {
      '#/guests': () => rowState(ro, guest).filter({ hasText: 'shut off' }).waitFor({ timeout: STEP_MS }),
      [`#/guests/${guest}`]: () =>
        ro.getByTestId('guest-state').filter({ hasText: 'shut off' }).waitFor({ timeout: STEP_MS }),
      '#/storage': async () => {
        await ro.locator(`[data-testid="pool-row"][data-name="${pool}"] [data-testid="pool-open"]`).click();
        await ro.locator('[data-testid="volume-row"][data-name="web-test.iso"]').waitFor({ timeout: STEP_MS });
      },
      '#/networks': () => ro.getByText('No networks are defined.').waitFor({ timeout: STEP_MS }),
    };
    for (const [path, drawn] of Object.entries(pages)) {
      await ro.goto(`${url}/${path}`);
      await drawn();
      const actions = await ro
        .locator('[data-testid^="action-"], [data-testid="upload-form"], [data-testid="tab-console"], [data-testid="tab-graphics"], [data-testid="nav-create"]:visible')
        .count();
      if (actions !== 0) throw new Error(`${path}: ${actions} action controls for a read-only user`);
    }
  });

  await check('the API refuses the read-only session\'s actions with 403 (CSRF token included)', async () => {
    const statuses = await ro.evaluate(async (name) => {
      const session = await (await fetch('/v1/session')).json();
      const headers = { 'X-CSRF-Token': session.csrf_token, 'Content-Type': 'application/json' };
      const start = await fetch(`/v1/domains/${encodeURIComponent(name)}/start`, { method: 'POST', headers });
      const undefine = await fetch(`/v1/domains/${encodeURIComponent(name)}`, { method: 'DELETE', headers });
      return { role: session.role, start: start.status, undefine: undefine.status };
    }, guest);
    if (statuses.role !== 'read-only' || statuses.start !== 403 || statuses.undefine !== 403) {
      throw new Error(`want read-only, 403, 403: ${JSON.stringify(statuses)}`);
    }
    await ro.goto(`${url}/#/guests`);
    await rowState(ro, guest).filter({ hasText: 'shut off' }).waitFor({ timeout: STEP_MS });
  });

  await check('delete asks for confirmation; confirmed, the guest leaves the list without a reload', async () => {
    await page.goto(`${url}/#/guests/${guest}`);
    await page.getByTestId('action-delete').click();
    await page.getByTestId('confirm-dialog').waitFor({ timeout: STEP_MS });
    await page.getByTestId('confirm-cancel').click();
    await page.getByTestId('action-delete').waitFor({ timeout: STEP_MS });
    await page.getByTestId('action-delete').click();
    await page.getByTestId('confirm-ok').click();
    await list.locator(`[data-testid="guest-row"][data-name="${guest}"]`).waitFor({ state: 'detached', timeout: STEP_MS });
    const same = await list.evaluate(() => window.oxvirtNotReloaded === true);
    if (!same) throw new Error('the list page was reloaded');
  });

  await check('log out: the session is gone', async () => {
    await page.getByTestId('logout').click();
    await page.getByTestId('login-form').waitFor({ timeout: STEP_MS });
    const status = await page.evaluate(async () => (await fetch('/v1/session')).status);
    if (status !== 401) throw new Error(`GET /v1/session after logout: ${status}`);
  });
} catch (e) {
  failed = true;
  console.error(`browser test: FAILED at step "${step}": ${e.stack ?? e}`);
  for (const [label, page] of pages) {
    try {
      const file = join(artifacts, `${label}.png`);
      writeFileSync(file, await page.screenshot({ fullPage: true }));
      console.error(`browser test: ${label} page (${page.url()}) saved as ${file}`);
    } catch {
      // The page is gone; its log follows.
    }
  }
  console.error(logs.join('\n'));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
