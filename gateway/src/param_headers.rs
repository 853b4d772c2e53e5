//! The `Mcp-Param-*` headers of a 2026-07-28 call, checked against its arguments.

use crate::call::Pipeline;
use crate::caller::Caller;
use crate::era;
use crate::policy::Action;
use crate::tool_call::ToolCall;
use crate::tool_listing;

impl Pipeline {
    /// The `Mcp-Param-*` headers of a 2026-07-28 call against its arguments. When the tool's
    /// annotations are unknown, the tools are listed first (not for a call policy denies: it
    /// goes nowhere). Without a listing the headers cannot be checked and pass on as they are.
    pub async fn check_param_headers(
        &self,
        caller: &Caller,
        call: &ToolCall,
    ) -> Result<(), crate::error::RequestError> {
        let tool = call.tool.as_str();
        if self.schemas.param_headers(tool).is_none()
            && call.invalid.is_none()
            && call.verdict.action != Action::Deny
        {
            let _one = self.schemas.listing.lock().await;
            if self.schemas.param_headers(tool).is_none() {
                let listed = tool_listing::list_tools(&self.schemas, &self.link, caller, tool);
                if let Err(why) = listed.await {
                    tracing::warn!(tool, why = %why, "Mcp-Param-* headers not checked: tools/list failed");
                }
            }
        }
        match self.schemas.param_headers(tool) {
            Some(a) => era::check_param_headers(&caller.headers, &a, &call.arguments),
            None => Ok(()),
        }
    }
}
