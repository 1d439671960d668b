//! The ledger contract (`domain::ledger_contract`) over DynamoDB: each check on a table of its
//! own in moto, made as the adapter tests make theirs.

use aws_adapters::DynamoStore;

async fn table() -> Box<DynamoStore> {
    Box::new(super::adapters::store().await)
}

domain::ledger_contract_tests!(table);
