//! The state every intake shares (the HTTP endpoint, the Icinga event
//! stream, the missed-run watch): the settings and the publisher.

use std::sync::Arc;

use crate::config::Settings;
use crate::publish::Publisher;

struct Inner {
    settings: Settings,
    publisher: Publisher,
}

/// What the intakes need: the settings and the publisher.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(settings: Settings, publisher: Publisher) -> Self {
        AppState(Arc::new(Inner { settings, publisher }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn publisher(&self) -> &Publisher {
        &self.0.publisher
    }
}
