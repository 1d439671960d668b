//! The webhook delivery Lambda: typed config, clients, the webhook key and the deliverer built
//! once per container, then every SQS batch of the delivery queue handed to
//! `aws_adapters::lambda::handle_delivery_event`. Everything testable lives under `shared/`.

use std::sync::Arc;

use aws_adapters::lambda::{WebhookKeySource, dev_mode, handle_delivery_event};
use aws_adapters::{AwsClients, AwsConfig, DynamoStore, SqsDeliveries};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use domain::webhooks::DeliveryQueue;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use webhooks::{Deliverer, DeliveryConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsConfig::from_env(false)?;
    let queue_url = aws.delivery_queue()?;
    let config = DeliveryConfig::from_env(dev_mode())?;
    let key = WebhookKeySource::from_env()?;
    let clients = AwsClients::new(&aws).await;
    let key = key.read(&clients).await?;
    let queue: Arc<dyn DeliveryQueue> = Arc::new(SqsDeliveries::new(&clients, queue_url));
    let store = Arc::new(DynamoStore::new(&clients, &aws.table));
    let deliverer = Deliverer::new(store, queue.clone(), key, config)?;
    let (deliverer, queue) = (&deliverer, &*queue);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(handle_delivery_event(deliverer, queue, event.payload).await)
    }))
    .await
}
