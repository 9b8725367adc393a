// jsforce against the sandbox, as a user would run it: nothing here names the sandbox. jsforce logs in
// at its default https://login.salesforce.com and reaches the sandbox through HTTPS_PROXY, trusting
// the sandbox certificate through NODE_EXTRA_CA_CERTS. Prints one JSON object of what it saw.
//
// Input (JSON in the SYNC_INPUT environment variable): clientId, clientSecret, refreshToken,
// username, password (with the security token), since (ISO datetime for the incremental query).
const jsforce = require('jsforce');

const input = JSON.parse(process.env.SYNC_INPUT);

async function collect(stream) {
  const records = [];
  await new Promise((resolve, reject) => {
    stream.on('record', (record) => records.push(record)).on('end', resolve).on('error', reject);
  });
  return records;
}

async function main() {
  const out = {};

  // Refresh-token login (the OAuth2 flow connectors keep a refresh token for).
  const oauth2 = new jsforce.OAuth2({ clientId: input.clientId, clientSecret: input.clientSecret });
  const token = await oauth2.refreshToken(input.refreshToken);
  const conn = new jsforce.Connection({
    oauth2, refreshToken: input.refreshToken, accessToken: token.access_token, instanceUrl: token.instance_url,
    version: '59.0',
  });
  // Poll the sandbox's quick jobs often, and within a generous deadline.
  Object.assign(conn.bulk, { pollInterval: 100, pollTimeout: 120000 });
  Object.assign(conn.bulk2, { pollInterval: 100, pollTimeout: 120000 });
  out.instanceUrl = conn.instanceUrl;
  out.identity = (await conn.identity()).username;

  // SOAP login with username and password + security token.
  const soap = new jsforce.Connection({ version: '59.0' });
  out.soapUserId = (await soap.login(input.username, input.password)).id;

  // Discovery.
  out.objects = (await conn.describeGlobal()).sobjects.map((o) => o.name);
  out.orderFields = (await conn.sobject('Order').describe()).fields.map((f) => f.name);

  // Full sync over REST: every order, 200 a page, following nextRecordsUrl.
  const orders = [];
  await conn.query('SELECT Id, SystemModstamp FROM Order ORDER BY SystemModstamp')
    .on('record', (record) => orders.push(record.Id))
    .run({ autoFetch: true, maxFetch: 1000000, headers: { 'Sforce-Query-Options': 'batchSize=200' } });
  out.restOrderIds = orders;

  // Incremental sync over REST: what changed since the last run.
  const changed = await conn.query(`SELECT Id FROM Account WHERE SystemModstamp > ${input.since}`);
  out.changedAccountIds = changed.records.map((r) => r.Id);

  // Bulk API 1.0 and Bulk API 2.0 queries.
  out.bulk1AccountIds = (await collect(await conn.bulk.query('SELECT Id FROM Account'))).map((r) => r.Id);
  out.bulk2OrderIds = (await (await conn.bulk2.query('SELECT Id FROM Order')).toArray()).map((r) => r.Id);

  // Writes: Bulk API 1.0 insert, Bulk API 2.0 insert, then the new records read back by id.
  const bulk1 = await conn.bulk.load('Account', 'insert', [{ Name: 'jsforce bulk1 one' }, { Name: 'jsforce bulk1 two' }]);
  out.bulk1Inserted = bulk1.map((r) => ({ id: r.id, success: r.success }));
  const bulk2 = await conn.bulk2.loadAndWaitForResults({
    object: 'Account', operation: 'insert', input: [{ Name: 'jsforce bulk2 one' }],
  });
  out.bulk2Inserted = bulk2.successfulResults.map((r) => r.sf__Id);
  const ids = [...out.bulk1Inserted.map((r) => r.id), ...out.bulk2Inserted];
  out.retrievedNames = (await conn.sobject('Account').retrieve(ids)).map((r) => r.Name);

  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
