//! Numbers and routing: the tenant's numbers with their role, state and 7-day health, and the
//! routing simulator, which shows where a text would go and why, step by step, writing nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use chrono::Utc;
use serde::Deserialize;

use super::pages::{self, Page};
use super::session::SignedIn;
use crate::domain::relay::number::NumberState;
use crate::domain::PhoneNumber;
use crate::engine::relay_simulate::Simulation;
use crate::engine::Herald;

/// The page shows this many numbers; a larger pool is managed through `/v1/numbers`.
const SHOWN: usize = 500;
const MAX_SAMPLE_CHARS: usize = 1600;

#[derive(Debug, Default, Deserialize)]
pub struct SimulateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    body: String,
}

/// `GET /console/numbers`
pub async fn page(State(herald): State<Arc<Herald>>, who: SignedIn) -> Response {
    show(
        &herald,
        &who,
        &SimulateForm::default(),
        None,
        StatusCode::OK,
    )
    .await
}

async fn show(
    herald: &Herald,
    who: &SignedIn,
    form: &SimulateForm,
    result: Option<minijinja::Value>,
    status: StatusCode,
) -> Response {
    let numbers = match herald.relay.numbers(&who.tenant, None, SHOWN).await {
        Ok(numbers) => numbers,
        Err(_) => return pages::unavailable(),
    };
    let mut health = match numbers.is_empty() {
        true => Default::default(),
        false => match herald.number_health(&who.tenant, Utc::now()).await {
            Ok(health) => health,
            Err(_) => return pages::unavailable(),
        },
    };
    let rows: Vec<_> = numbers
        .iter()
        .map(|n| {
            let until = match n.state {
                NumberState::Quarantined { until } => Some(until),
                _ => None,
            };
            minijinja::context! {
                number => n.number.as_str(), role => n.role.as_str(), provider => &n.provider,
                state => n.state.as_str(), until => until, worker => n.worker.as_ref().map(|w| w.as_str()),
                health => health.remove(n.number.as_str()).unwrap_or_default(),
            }
        })
        .collect();
    let page = Page::new("numbers.html", "Numbers and routing").with(minijinja::context! {
        who => super::who(who),
        section => "numbers",
        numbers => rows,
        form => minijinja::context! { to => &form.to, from => &form.from, body => &form.body },
        result => result,
    });
    pages::render_status(status, &page)
}

/// `POST /console/numbers/simulate`: needs the session's token, not the admin scope (it
/// writes nothing).
pub async fn simulate(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Form(form): Form<SimulateForm>,
) -> Response {
    if let Err(refused) = who.check_token(&form.csrf) {
        return refused;
    }
    let parsed = (
        PhoneNumber::parse(form.to.trim()),
        PhoneNumber::parse(form.from.trim()),
    );
    let (Ok(to), Ok(from)) = parsed else {
        let problem = minijinja::context! { problem => "Give both numbers in E.164 form, like +15551234567." };
        return show(
            &herald,
            &who,
            &form,
            Some(problem),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    if form.body.chars().count() > MAX_SAMPLE_CHARS {
        let problem = minijinja::context! { problem => format!("The text is at most {MAX_SAMPLE_CHARS} characters.") };
        return show(
            &herald,
            &who,
            &form,
            Some(problem),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let simulation = herald
        .simulate_route(&who.tenant, (&to, &from), Utc::now(), &form.body)
        .await;
    let result = match simulation {
        Ok(Some(simulation)) => view(simulation),
        Ok(None) => {
            let problem = minijinja::context! { problem => format!("{} is none of your numbers.", to.as_str()) };
            return show(&herald, &who, &form, Some(problem), StatusCode::NOT_FOUND).await;
        }
        Err(_) => return pages::unavailable(),
    };
    show(&herald, &who, &form, Some(result), StatusCode::OK).await
}

fn view(simulation: Simulation) -> minijinja::Value {
    let trace: Vec<_> = simulation
        .decision
        .trace
        .iter()
        .map(|step| {
            minijinja::context! {
                step => &step.step, matched => step.matched, why => &step.why,
                inputs => step.inputs.to_string(),
            }
        })
        .collect();
    let route = serde_json::to_value(&simulation.decision.route).unwrap_or_default();
    let sharing = simulation.relayed.and_then(|relayed| {
        relayed.sharing.map(|s| {
            minijinja::context! {
                kinds => s.kinds, action => s.action, body => relayed.body,
            }
        })
    });
    minijinja::context! {
        action => route.get("action").and_then(|a| a.as_str()).unwrap_or_default().to_owned(),
        route => route.to_string(),
        trace => trace,
        sharing => sharing,
    }
}
