import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { all, settlesWithin } from '../../src/util/settle.js';

describe('settling side-by-side work', () => {
  it('settlesWithin tells work done in time (even failed) from work still running, and leaves its outcome to the caller', async () => {
    assert.equal(await settlesWithin(sleep(5), 200), true);
    const failing = Promise.reject(new Error('umount failed'));
    assert.equal(await settlesWithin(failing, 200), true);
    await assert.rejects(failing, /umount failed/);
    const slow = sleep(300).then(() => 'done');
    assert.equal(await settlesWithin(slow, 20), false);
    assert.equal(await slow, 'done');
  });

  it('all waits for every branch before failing with the first failure', async () => {
    let finished = false;
    await assert.rejects(all([Promise.reject(new Error('first')), sleep(50).then(() => (finished = true))]), /first/);
    assert.equal(finished, true);
  });
});
