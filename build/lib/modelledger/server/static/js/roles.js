// What the signed-in member may do, from /whoami: the same rule as Member.has_role on the
// server, used only to decide which buttons to show. The server checks again on every call.

function globToRegExp(pattern) {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") out += ".*";
    else if (c === "?") out += ".";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end === -1) out += "\\[";
      else {
        let body = pattern.slice(i + 1, end).replace(/\\/g, "\\\\");
        if (body.startsWith("!")) body = "^" + body.slice(1);
        out += `[${body}]`;
        i = end;
      }
    } else out += c.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
  }
  return new RegExp(`^${out}$`, "s");
}

export function hasRole(member, role, model) {
  if (!member) return false;
  const held =
    member.roles.includes(role) || (!["serving", "gateway"].includes(role) && member.roles.includes("admin"));
  if (!held) return false;
  if (model === null || model === undefined) return role !== "admin" || member.models.includes("*");
  return member.models.some((pattern) => globToRegExp(pattern).test(model));
}

export function unscoped(member) {
  return Boolean(member) && member.models.includes("*");
}
