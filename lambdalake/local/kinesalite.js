// Starts kinesalite (the Kinesis API on LevelDB) bound to one address, which its CLI cannot do.
// Usage: node kinesalite.js --port N --path DIR [--host 127.0.0.1] [--shard-limit N]
'use strict';

// GetShardIterator AT_TIMESTAMP: kinesalite looks for the shard's first record at or after the
// timestamp and answers only when it finds one (actions/getShardIterator.js: lazy(...).head(cb)),
// so a timestamp after the shard's last record (a consumer started AT_TIMESTAMP "now" on a quiet
// stream, or any empty shard) hung the request until the client's read timeout, again on every
// retry. Kinesis answers with an iterator at the tip, which gets the records that arrive later.
// The actions are loaded once, into a table, when kinesalite is required: the wrapper replaces the
// module's exports in Node's cache before that.
const getShardIteratorPath = require.resolve('kinesalite/actions/getShardIterator');
const getShardIterator = require(getShardIteratorPath);
require.cache[getShardIteratorPath].exports = atTimestampFindsTheTip(getShardIterator);

function atTimestampFindsTheTip(getShardIterator) {
  const db = require('kinesalite/db');
  return function (store, data, cb) {
    if (data.ShardIteratorType !== 'AT_TIMESTAMP' || data.Timestamp == null || data.Timestamp * 1000 > Date.now()) {
      return getShardIterator(store, data, cb);  // its own answer, errors included
    }
    // LATEST first: it checks the stream and shard as AT_TIMESTAMP would, and is the answer when
    // no record is at or after the timestamp (a record that arrives meanwhile is after the tip)
    const asLatest = Object.assign({}, data, {ShardIteratorType: 'LATEST'});
    delete asLatest.Timestamp;
    getShardIterator(store, asLatest, (err, latest) => {
      if (err) return cb(err);
      const shard = db.resolveShardId(data.ShardId);
      const records = store.getStreamDb(data.StreamName).createReadStream({
        gt: db.shardIxToHex(shard.shardIx),
        lt: db.shardIxToHex(shard.shardIx + 1),
      });
      let answered = false;
      const answer = (error, result) => {
        if (answered) return;
        answered = true;
        records.destroy();
        cb(error, result);
      };
      records.on('data', (item) => {
        if (item.value.ApproximateArrivalTimestamp >= data.Timestamp) {
          const seq = item.key.split('/')[1];
          answer(null, {ShardIterator: db.createShardIterator(data.StreamName, shard.shardId, seq)});
        }
      });
      records.on('error', (error) => answer(error));
      records.on('end', () => answer(null, latest));
    });
  };
}

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
