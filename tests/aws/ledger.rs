//! The ledger and result contracts (`domain::ledger_contract`, `domain::result_contract`) over
//! DynamoDB: each check on a table of its
//! own in moto, made as the adapter tests make theirs. The two races are left out: moto does not
//! isolate concurrent conditional writes (8 racing claims can see several winners there), which
//! DynamoDB does; memory and SQLite run them.

use aws_adapters::DynamoStore;

async fn table() -> Box<DynamoStore> {
    Box::new(super::adapters::store().await)
}

domain::ledger_contract_tests!(table, without_races);
domain::result_contract_tests!(table);
