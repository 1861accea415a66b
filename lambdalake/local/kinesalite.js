// Starts kinesalite (the Kinesis API on LevelDB) bound to one address, which its CLI cannot do.
// Usage: node kinesalite.js --port N --path DIR [--host 127.0.0.1] [--shard-limit N]
'use strict';
const kinesalite = require('kinesalite');

const args = {host: '127.0.0.1', port: '4579', path: null, 'shard-limit': '200'};
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (!(key in args)) { console.error(`unknown option --${key}`); process.exit(2); }
  args[key] = process.argv[i + 1];
}
if (!args.path) { console.error('--path is required (kinesalite keeps its data there)'); process.exit(2); }

const server = kinesalite({
  path: args.path,
  createStreamMs: 50,
  deleteStreamMs: 50,
  updateStreamMs: 50,
  shardLimit: Number(args['shard-limit']),
});
server.listen(Number(args.port), args.host, (err) => {
  if (err) { console.error(err.message); process.exit(1); }
  console.log(`kinesalite listening on ${args.host}:${args.port}, data in ${args.path}`);
});
// kinesalite throws from a request's 'error' event (index.js: req.on('error', err => { throw err })),
// so a client killed mid-request (kill -9 of a producer or consumer) would take the whole stream
// server down. A vanished client is not the server's failure: log it and go on; anything else is.
process.on('uncaughtException', (err) => {
  if (err && (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.message === 'aborted')) {
    console.error(`client went away mid-request: ${err.message}`);
    return;
  }
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});

const stop = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();  // idle keep-alive sockets must not hold us
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
