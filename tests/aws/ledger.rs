//! Placeholder: the ledger contract over DynamoDB (being written).
