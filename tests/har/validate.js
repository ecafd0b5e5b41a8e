// Validates each HAR file named on the command line against the HAR 1.2 JSON schema
// (npm har-schema, draft-06) with ajv. Prints "valid FILE" or the schema errors, and
// exits non-zero if any file is invalid.
'use strict';
const fs = require('fs');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');
const schemas = require('har-schema');

// har-schema uses draft-06 and two keywords of its own (`optional`, `min`): not strict.
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
addFormats(ajv);
for (const schema of Object.values(schemas)) {
  ajv.addSchema(schema);
}
const validate = ajv.getSchema('har.json#');

let failed = 0;
for (const file of process.argv.slice(2)) {
  const har = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (validate(har)) {
    console.log(`valid ${file} (${har.log.entries.length} entries)`);
  } else {
    failed += 1;
    console.log(`invalid ${file}:`);
    for (const e of validate.errors.slice(0, 20)) {
      console.log(`  ${e.instancePath || '/'}: ${e.message} ${JSON.stringify(e.params)}`);
    }
  }
}
process.exit(failed ? 1 : 0);
