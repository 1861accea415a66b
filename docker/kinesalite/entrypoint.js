// kinesalite for docker-compose: start lambdalake/local/kinesalite.js (copied next to this file)
// on KINESALITE_HOST:KINESALITE_PORT with its data in KINESALITE_DATA, then create the event and
// DLQ streams if they do not exist (what `lambdalake up` does locally). Signals go to kinesalite.
//   node entrypoint.js          run (the container's command)
//   node entrypoint.js check    exit 0 if both streams are ACTIVE (the container's healthcheck)
'use strict';
const http = require('http');
const path = require('path');
const {spawn} = require('child_process');

const host = process.env.KINESALITE_HOST || '0.0.0.0';
const port = Number(process.env.KINESALITE_PORT || '4567');
const data = process.env.KINESALITE_DATA || '/data';
const streams = [
  [process.env.LAMBDALAKE_STREAM_NAME || 'lambdalake-events', Number(process.env.LAMBDALAKE_STREAM_SHARDS || '4')],
  [process.env.LAMBDALAKE_DLQ_STREAM_NAME || 'lambdalake-dlq', 1],
];

// One Kinesis JSON-protocol call to kinesalite (it checks that a signature is present, not its value).
function call(action, body) {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, method: 'POST', path: '/',
      headers: {
        'Content-Type': 'application/x-amz-json-1.1',
        'X-Amz-Target': `Kinesis_20131202.${action}`,
        'X-Amz-Date': new Date().toISOString().replace(/[-:]|\.\d{3}/g, ''),
        Authorization: 'AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/kinesis/aws4_request, '
          + 'SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0',
        'Content-Length': Buffer.byteLength(payload),
      },
      timeout: 5000,
    }, (res) => {
      let text = '';
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => resolve({status: res.statusCode, body: text ? JSON.parse(text) : {}}));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

async function status(name) {
  const res = await call('DescribeStreamSummary', {StreamName: name});
  return res.status === 200 ? res.body.StreamDescriptionSummary.StreamStatus : null;
}

async function check() {
  for (const [name] of streams) {
    if ((await status(name)) !== 'ACTIVE') return false;
  }
  return true;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function ensureStreams() {
  for (let attempt = 0; ; attempt += 1) {
    try {
      for (const [name, shards] of streams) {
        if ((await status(name)) === null) {
          const res = await call('CreateStream', {StreamName: name, ShardCount: shards});
          if (res.status !== 200 && res.body.__type !== 'ResourceInUseException') {
            throw new Error(`CreateStream ${name}: ${JSON.stringify(res.body)}`);
          }
          console.log(`created stream ${name} (${shards} shard(s))`);
        }
      }
      return;
    } catch (err) {
      if (attempt >= 100) throw err;
      await sleep(200);  // kinesalite still starting
    }
  }
}

if (process.argv[2] === 'check') {
  check().then((ok) => process.exit(ok ? 0 : 1), () => process.exit(1));
} else {
  const child = spawn(process.execPath, [
    path.join(__dirname, 'kinesalite.js'), '--host', host, '--port', String(port), '--path', data,
  ], {stdio: 'inherit'});
  child.on('exit', (code, signal) => process.exit(code === null ? (signal === 'SIGTERM' ? 0 : 1) : code));
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => child.kill(sig));
  ensureStreams().catch((err) => { console.error(err.message); child.kill('SIGTERM'); process.exitCode = 1; });
}
